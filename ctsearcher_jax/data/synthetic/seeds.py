"""Random streams of the generator: one `SeedSequence([seed, stream, *keys])` per purpose.

Every CT, reader style, (CT, reader) scanpath and the split draw from their own stream, so adding
CTs or readers does not change the existing ones.
"""

from __future__ import annotations

import numpy as np

STREAM_CT, STREAM_READER, STREAM_SCANPATH, STREAM_SPLIT = 1, 2, 3, 4


def stream_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    """The generator of `stream` (one of the STREAM_* keys) for a dataset seed and its keys."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, *keys]))
