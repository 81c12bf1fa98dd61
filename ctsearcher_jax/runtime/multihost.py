"""Multi-process runs fail together: every process learns any process's error and raises it.

A process that fails alone (weights it cannot read, an output it cannot write) and exits would
leave the others waiting at the next collective until the coordinator times out, which looks
like a hang. `agree_on_error` is a collective every process calls at the same point: each
contributes its error (or none), and every process raises the same one-line error, naming the
process it came from.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from ctsearcher_jax import errors

# Fixed-size slots: the collective needs the same shape on every process.
_SLOT = 1024
_KINDS = {"DataError": errors.DataError, "ConfigError": errors.ConfigError,
          "CheckpointError": errors.CheckpointError, "WeightsError": errors.WeightsError,
          "OutputError": errors.OutputError}


def _encode(exc: BaseException | None) -> np.ndarray:
    slot = np.zeros(_SLOT, np.uint8)
    if exc is not None:
        kind = type(exc).__name__ if type(exc).__name__ in _KINDS else "other"
        text = f"{kind}|{exc if str(exc) else type(exc).__name__}".encode("utf-8", "replace")
        slot[0] = 1
        body = np.frombuffer(text[:_SLOT - 1], np.uint8)
        slot[1:1 + body.size] = body
    return slot


def agree_on_error(exc: BaseException | None) -> None:
    """Collective: raise on every process the first error any process had (None: return).

    Single process: re-raises `exc` itself. Several processes: every process raises the error
    of the first failed process p, as the same class (project errors; anything else a
    `CTSearcherError`) with "process p: " in front, so all logs say the same thing.
    """
    if jax.process_count() == 1:
        if exc is not None:
            raise exc
        return

    slots = np.asarray(multihost_utils.process_allgather(_encode(exc)))
    failed = [p for p in range(slots.shape[0]) if slots[p, 0]]
    if not failed:
        return
    p = failed[0]
    kind, _, message = bytes(slots[p, 1:]).rstrip(b"\0").decode("utf-8", "replace").partition("|")
    cls = _KINDS.get(kind, errors.CTSearcherError)
    raise cls(f"process {p}: {message}") from (exc if p == jax.process_index() else None)
