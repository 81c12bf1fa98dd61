"""Scanpaths for CTs from their feature files, as dataset-format records.

`sample_records` is what `predict` and training's metric evaluator share: per CT it loads the
tokens (`data.features`), finds the Z extent (`data.frames`) and draws scanpaths with the jitted
sampler (`model.sampling`) in fixed-size chunks of CTs, so one compiled shape serves every chunk.
With ground-truth readers, sample s of reader r takes that reader's subject, in sample-major
blocks: the pairing the original evaluation protocol uses (prediction i against reader i).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from ctsearcher_jax.config import Config
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import DataError

CHUNK = 8  # CTs per sampling call: bounds memory, and one compiled shape serves every chunk


def _subjects_for(name: str, samples: int, readers: Mapping[str, Sequence[Scanpath]] | None) -> list:
    if readers and readers.get(name):
        subjects = [r.subject for r in readers[name]]
        return [s for _ in range(samples) for s in subjects]
    return list(range(1, samples + 1))


def sample_records(model: Any, config: Config, names: Sequence[str], feature_dir: str | os.PathLike[str],
                   *, samples: int, seed: int,
                   readers: Mapping[str, Sequence[Scanpath]] | None = None) -> list[dict[str, Any]]:
    """Dataset-format records: per CT, `samples` scanpaths (x its readers when `readers` is given).

    Deterministic for `seed`: chunk c of CTs uses `fold_in(key(seed), c)`.
    """
    import jax

    from ctsearcher_jax.data.features import load_tokens
    from ctsearcher_jax.data.frames import z_extents
    from ctsearcher_jax.model.sampling import sample_scanpaths, sampled_to_records

    extents = z_extents(config.data, names, feature_dir)
    per_ct = {n: len(_subjects_for(n, samples, readers)) for n in names}
    # One sampling width for every CT keeps one compiled shape; extra draws are dropped.
    width = max(per_ct.values(), default=samples)
    records: list[dict[str, Any]] = []
    key = jax.random.key(seed)
    for c, start in enumerate(range(0, len(names), CHUNK)):
        chunk = list(names[start:start + CHUNK])
        tokens = np.stack([load_tokens(feature_dir, n, config.model.grid) for n in chunk])
        z = np.array([extents[n] for n in chunk], np.float32)
        if len(chunk) < CHUNK and len(names) > CHUNK:  # pad the last chunk to the compiled shape
            pad = CHUNK - len(chunk)
            tokens = np.concatenate([tokens, np.repeat(tokens[-1:], pad, 0)])
            z = np.concatenate([z, np.repeat(z[-1:], pad)])
        if tokens.shape[-1] != config.model.feature_dim:
            raise DataError(f"{feature_dir}: features of {chunk[0]!r} have {tokens.shape[-1]} channels; "
                            f"the model expects {config.model.feature_dim} (re-extract them)")
        sampled = sample_scanpaths(model, tokens, jax.random.fold_in(key, c), num_samples=width,
                                   min_length=config.eval.min_length,
                                   legacy_duration_sampling=config.eval.legacy_duration_sampling,
                                   frame=config.data.frame, z_extent=z)
        sampled = jax.tree.map(lambda a: np.asarray(a)[: len(chunk)], sampled)
        subjects = [_subjects_for(n, samples, readers) + [None] * (width - per_ct[n]) for n in chunk]
        for rec in sampled_to_records(sampled, chunk, subjects):
            if rec["subject"] is not None:
                records.append(rec)
    empty = [f"{r['name']} (subject {r['subject']})" for r in records if r["length"] == 0]
    if empty:
        raise DataError(f"the model stopped before the first fixation for {empty[:3]}; raise "
                        f"eval.min_length (--set eval.min_length=N) so every scanpath has fixations")
    return records


def records_to_scanpaths(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Scanpath]]:
    """Group prediction records by CT as `Scanpath`s (for figures)."""
    out: dict[str, list[Scanpath]] = {}
    for rec in records:
        arr = [np.asarray(rec[k], np.float64) for k in ("X", "Y", "Z", "T")]
        out.setdefault(rec["name"], []).append(
            Scanpath(name=rec["name"], subject=rec["subject"], split=None, x=arr[0], y=arr[1],
                     z=arr[2], t=arr[3]))
    return out
