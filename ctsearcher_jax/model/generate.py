"""Scanpaths for CTs from their feature files, as dataset-format records.

`sample_records` is what `predict` and training's metric evaluator share: per CT it loads the
tokens (`data.features`), finds the Z extent (`data.frames`) and draws scanpaths with the jitted
sampler (`model.sampling`) in fixed-size chunks of CTs, so one compiled shape serves every chunk,
with one key per CT (its scanpaths do not depend on which chunk, device or process drew them).
With ground-truth readers, sample s of reader r takes that reader's subject, in sample-major
blocks: the pairing the original evaluation protocol uses (prediction i against reader i).

`samplers(config)` is the one place that picks the sampler: CT-Searcher's one-pass draw
(`model.sampling`) or, for an autoregressive architecture, the `lax.scan` with a KV cache
(`model.sampling_ar`, with `eval.temperature` and `eval.top_k`); both take the same arguments and
return the same `SampledScanpaths`.

A reader-conditioned model draws each reader's samples from that reader's own decoder pass:
per CT, the ground-truth readers (or, without ground truth, every reader the model knows), kept
to `reader_filter` when given (`predict --reader ID`); records keep the same sample-major order.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ctsearcher_jax.config import Config
from ctsearcher_jax.data.features import load_tokens
from ctsearcher_jax.data.frames import z_extents
from ctsearcher_jax.data.readers import reader_id, reader_indices, subject_of
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import ConfigError, DataError
from ctsearcher_jax.model import sampling, sampling_ar
from ctsearcher_jax.model.factory import check_sampling, is_autoregressive
from ctsearcher_jax.model.sampling import sampled_to_records

CHUNK = 8  # CTs per sampling call: bounds memory, and one compiled shape serves every chunk


class Samplers(NamedTuple):
    """The jitted samplers of an architecture (signatures of `model.sampling`'s)."""

    per_ct: Callable  # sample_scanpaths_per_ct(model, tokens, keys, *, num_samples, ...)
    chunk: Callable  # sample_scanpaths(model, tokens, key, *, num_samples, ..., readers)


def samplers(config: Config) -> Samplers:
    """The samplers of `config.model.arch`: autoregressive ones get eval.temperature / top_k
    (ConfigError when those are set for another architecture)."""
    check_sampling(config.model.arch, config.eval.temperature, config.eval.top_k)
    if is_autoregressive(config.model.arch):
        options = {"temperature": config.eval.temperature, "top_k": config.eval.top_k}
        return Samplers(functools.partial(sampling_ar.sample_scanpaths_per_ct, **options),
                        functools.partial(sampling_ar.sample_scanpaths, **options))
    return Samplers(sampling.sample_scanpaths_per_ct, sampling.sample_scanpaths)


def _subjects_for(name: str, samples: int, readers: Mapping[str, Sequence[Scanpath]] | None) -> list:
    if readers and readers.get(name):
        subjects = [r.subject for r in readers[name]]
        return [s for _ in range(samples) for s in subjects]
    return list(range(1, samples + 1))


def sample_records(model: Any, config: Config, names: Sequence[str], feature_dir: str | os.PathLike[str],
                   *, samples: int, seed: int,
                   readers: Mapping[str, Sequence[Scanpath]] | None = None,
                   indices: Sequence[int] | None = None,
                   devices: Sequence[Any] | None = None,
                   reader_filter: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Dataset-format records: per CT, `samples` scanpaths (x its readers when `readers` is given).

    Deterministic for `seed`: CT `names[i]` draws with `fold_in(key(seed), indices[i])` (indices
    default to 0, 1, ...: the CT's position in the whole list), so a CT's scanpaths do not depend
    on the chunking, the devices or the process that sampled it (up to float32 rounding of the
    forward pass, which may differ in the last bit between chunk sizes).

    devices: shard each chunk of CTs over these (this process's) devices, the model replicated
    on them; every chunk of the call then has the same size (a multiple of the device count, at
    most CHUNK rounded up, padded), so one compilation serves every chunk and every CT size. None: the default device, the last chunk
    padded only when there is more than one (training's evaluator, whose model may live on a
    global mesh).
    reader_filter: reader ids to sample for (reader-conditioned models only; ConfigError
    otherwise, DataError for an id the model does not know). A conditioned model samples per
    (CT, reader) job on the default device, chunk c of jobs with `fold_in(key(seed), c)`.
    """
    if reader_filter:
        check_reader_filter(config, reader_filter)
    if config.model.reader_conditioned:
        return _conditioned_records(model, config, names, feature_dir, samples=samples, seed=seed,
                                    readers=readers, reader_filter=reader_filter)


    indices = list(range(len(names))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(names):
        raise ValueError(f"need one index per CT: {len(indices)} for {len(names)}")
    extents = z_extents(config.data, names, feature_dir)
    per_ct = {n: len(_subjects_for(n, samples, readers)) for n in names}
    # One sampling width for every CT keeps one compiled shape; extra draws are dropped.
    width = max(per_ct.values(), default=samples)
    chunk_size, place = CHUNK, None
    if devices is not None:
        model, place, chunk_size = _replicate(model, list(devices))
        # Fewer CTs than a chunk: a smaller chunk (still a multiple of the device count), so one
        # CT on one device does not pay for eight; every chunk of this call has the same size.
        ndev = len(list(devices))
        chunk_size = min(chunk_size, max(ndev, -(-len(names) // ndev) * ndev))
    records: list[dict[str, Any]] = []
    base = jax.random.key(seed)
    for start in range(0, len(names), chunk_size):
        chunk = list(names[start:start + chunk_size])
        tokens = np.stack([load_tokens(feature_dir, n, config.model.grid) for n in chunk])
        z = np.array([extents[n] for n in chunk], np.float32)
        ids = np.array(indices[start:start + chunk_size], np.uint32)
        pad_to = chunk_size if (place is not None or len(names) > chunk_size) else len(chunk)
        if len(chunk) < pad_to:  # pad the last chunk to the compiled shape (rows dropped below)
            pad = pad_to - len(chunk)
            tokens = np.concatenate([tokens, np.repeat(tokens[-1:], pad, 0)])
            z = np.concatenate([z, np.repeat(z[-1:], pad)])
            ids = np.concatenate([ids, np.repeat(ids[-1:], pad)])
        if tokens.shape[-1] != config.model.feature_dim:
            raise DataError(f"{feature_dir}: features of {chunk[0]!r} have {tokens.shape[-1]} channels; "
                            f"the model expects {config.model.feature_dim} (re-extract them)")
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)
        args = (tokens, keys, z)
        if place is not None:
            args = tuple(place(a) for a in args)
        sampled = samplers(config).per_ct(model, args[0], args[1], num_samples=width,
                                          min_length=config.eval.min_length,
                                          legacy_duration_sampling=config.eval.legacy_duration_sampling,
                                          frame=config.data.frame, z_extent=args[2])
        sampled = jax.tree.map(lambda a: np.asarray(a)[: len(chunk)], sampled)
        subjects = [_subjects_for(n, samples, readers) + [None] * (width - per_ct[n]) for n in chunk]
        for rec in sampled_to_records(sampled, chunk, subjects):
            if rec["subject"] is not None:
                records.append(rec)
    _check_nonempty(records)
    return records


def check_reader_filter(config: Config, reader_filter: Sequence[str]) -> None:
    """ConfigError for reader ids given to an unconditioned model; DataError for unknown ids."""
    if not config.model.reader_conditioned:
        raise ConfigError("predicting as given readers (--reader, reader_filter) needs a "
                          "reader-conditioned model (trained with "
                          "model.reader_conditioning=embedding); this one has no reader input")
    reader_indices(config.model, list(reader_filter), where="readers asked for")


def _check_nonempty(records: Sequence[Mapping[str, Any]]) -> None:
    empty = [f"{r['name']} (subject {r['subject']})" for r in records if r["length"] == 0]
    if empty:
        raise DataError(f"the model stopped before the first fixation for {empty[:3]}; raise "
                        f"eval.min_length (--set eval.min_length=N) so every scanpath has fixations")


def _conditioned_records(model: Any, config: Config, names: Sequence[str],
                         feature_dir: str | os.PathLike[str], *, samples: int, seed: int,
                         readers: Mapping[str, Sequence[Scanpath]] | None,
                         reader_filter: Sequence[str] | None) -> list[dict[str, Any]]:
    """`sample_records` for a reader-conditioned model: one job per (CT, reader), CHUNK jobs per
    jitted call (chunk c uses `fold_in(key(seed), c)`), `samples` draws per job."""
    wanted = {reader_id(r) for r in reader_filter} if reader_filter else None
    subjects: dict[str, list] = {}
    for name in names:
        if readers and readers.get(name):
            found = [r.subject for r in readers[name]]
        else:
            found = [subject_of(r) for r in config.model.readers]
        subjects[name] = [s for s in found if wanted is None or reader_id(s) in wanted]
    jobs = [(n, s) for n in names for s in subjects[n]]
    rows = reader_indices(config.model, [s for _, s in jobs], where=str(feature_dir))
    extents = z_extents(config.data, names, feature_dir)
    tokens_of: dict[str, np.ndarray] = {}
    drawn: dict[tuple[str, str], list[dict[str, Any]]] = {}
    key = jax.random.key(seed)
    for c, start in enumerate(range(0, len(jobs), CHUNK)):
        chunk = jobs[start:start + CHUNK]
        chunk_rows = list(rows[start:start + CHUNK])
        for n, _ in chunk:
            if n not in tokens_of:
                tokens_of[n] = load_tokens(feature_dir, n, config.model.grid)
        tokens = np.stack([tokens_of[n] for n, _ in chunk])
        z = np.array([extents[n] for n, _ in chunk], np.float32)
        if len(chunk) < CHUNK and len(jobs) > CHUNK:  # pad the last chunk to the compiled shape
            pad = CHUNK - len(chunk)
            tokens = np.concatenate([tokens, np.repeat(tokens[-1:], pad, 0)])
            z = np.concatenate([z, np.repeat(z[-1:], pad)])
            chunk_rows += [chunk_rows[-1]] * pad
        if tokens.shape[-1] != config.model.feature_dim:
            raise DataError(f"{feature_dir}: features of {chunk[0][0]!r} have {tokens.shape[-1]} "
                            f"channels; the model expects {config.model.feature_dim} (re-extract them)")
        sampled = samplers(config).chunk(model, tokens, jax.random.fold_in(key, c), num_samples=samples,
                                   min_length=config.eval.min_length,
                                   legacy_duration_sampling=config.eval.legacy_duration_sampling,
                                   frame=config.data.frame, z_extent=z,
                                   readers=np.asarray(chunk_rows, np.int32))
        sampled = jax.tree.map(lambda a: np.asarray(a)[: len(chunk)], sampled)
        recs = sampled_to_records(sampled, [n for n, _ in chunk], [s for _, s in chunk])
        for j, (n, s) in enumerate(chunk):
            drawn[(n, reader_id(s))] = recs[j * samples:(j + 1) * samples]
    # sample-major per CT, as the unconditioned path: sample k of every reader, then k + 1
    records = [drawn[(n, reader_id(s))][k] for n in names for k in range(samples)
               for s in subjects[n]]
    _check_nonempty(records)
    return records


def _replicate(model: Any, devices: list) -> tuple[Any, Any, int]:
    """(model with its state replicated on `devices`, a function sharding arrays along their
    first axis over them, the chunk size: CHUNK rounded up to a multiple of the device count)."""
    mesh = Mesh(np.array(devices), ("data",))
    graphdef, state = nnx.split(model)
    model = nnx.merge(graphdef, jax.device_put(state, NamedSharding(mesh, P())))
    rows = NamedSharding(mesh, P("data"))
    chunk = -(-CHUNK // len(devices)) * len(devices)
    return model, (lambda a: jax.device_put(a, rows)), chunk


def records_to_scanpaths(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Scanpath]]:
    """Group prediction records by CT as `Scanpath`s (for figures)."""
    out: dict[str, list[Scanpath]] = {}
    for rec in records:
        arr = [np.asarray(rec[k], np.float64) for k in ("X", "Y", "Z", "T")]
        out.setdefault(rec["name"], []).append(
            Scanpath(name=rec["name"], subject=rec["subject"], split=None, x=arr[0], y=arr[1],
                     z=arr[2], t=arr[3]))
    return out
