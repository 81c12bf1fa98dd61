"""The input pipeline: grain datasets of CT examples, batched, sharded by JAX process, checkpointable.

One example is one CT with every reader's targets::

    tokens         (N, C)        float32  feature tokens on the model grid
    spatial        (R, L, K)     float32  per-reader spatial targets (class 0 = STOP)
    duration       (R, L)        float32  seconds
    action_mask    (R, L)        float32
    duration_mask  (R, L)        float32
    reader_mask    (R,)          float32  1 for real readers, 0 for padding
    reader_ids     (R,)          int32    embedding row of each reader (`model.readers`) for a
                                          reader-conditioned model; 0 for padding and otherwise
    gaze           (R, L, 4)     float32  each reader's first L fixations [x, y, z, seconds] as
                                          recorded (the fine-tuning reward scores against them)
    gaze_length    (R,)          int32    fixations in `gaze` (0 for padding)
    cells          (R, L)        int32    class (1 + token) of each fixation, 0 after the last
                                          (autoregressive models read the previous fixations)
    offsets        (R, L, 3)     float32  [x, y, z] position of each fixation inside its cell,
                                          in [0, 1) (`data.targets.fixation_targets`)
    z_extent       ()            float32  slices binned into Gz cells (decodes sampled cells)
    ct_mask        ()            float32  1 for real CTs, 0 for the padding of the last eval batch

R = R_max, the largest reader count in the dataset (every split), so batch shapes are static.

Order. Training draws global batches of B CTs from a per-epoch permutation of the training CTs
(grain's index shuffle, reseeded each epoch from `train.seed`); an epoch has floor(n / B) steps
(the remainder is dropped for static shapes, and lands in other batches in later epochs since
each epoch reshuffles). Global batch `s` is the same set and order of CTs whatever the number of
processes: process p loads rows [p*B/P, (p+1)*B/P) of it. The order is a pure function of
(seed, step), and the grain iterator state (how many local batches were consumed) is saved in the
checkpoint, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import grain
import numpy as np

from ctsearcher_jax.config import Config
from ctsearcher_jax.data.features import load_tokens
from ctsearcher_jax.data.frames import z_extents
from ctsearcher_jax.data.readers import reader_indices
from ctsearcher_jax.data.schema import CTItem
from ctsearcher_jax.data.targets import build_ct_targets, fixation_targets
from ctsearcher_jax.errors import ConfigError, DataError

Example = dict[str, np.ndarray]


def max_readers(items: Sequence[CTItem]) -> int:
    """R_max: the largest number of readers of any CT (the padded reader axis)."""
    if not items:
        raise DataError("the dataset has no CTs; check data.data_dir and the split names")
    return max(item.num_readers for item in items)


@dataclasses.dataclass(frozen=True)
class CTExampleSource:
    """Random-access source of CT examples (grain `MapDataset.source` protocol).

    items: the CTs; config: the run's config (model grid, max_length, data section);
    num_readers_padded: R_max for every split of the run.
    """

    items: tuple[CTItem, ...]
    config: Config
    num_readers_padded: int

    def __len__(self) -> int:
        return len(self.items)

    @functools.cached_property
    def z_extents(self) -> dict[str, int]:
        """CT name -> Z extent in slices (512, or the manifest's slice count for z_extent=volume)."""
        return z_extents(self.config.data, [item.name for item in self.items])

    def __getitem__(self, index: int) -> Example:
        item = self.items[index]
        model, data = self.config.model, self.config.data
        tokens = load_tokens(data.feature_dir, item.name, model.grid)
        if tokens.shape[1] != model.feature_dim:
            raise DataError(f"{data.feature_dir}/{item.name}.npy has {tokens.shape[1]} channels but "
                            f"model.feature_dim is {model.feature_dim}; fix the config or features")
        targets, reader_mask = build_ct_targets(
            item.readers, num_readers_padded=self.num_readers_padded, grid=model.grid,
            max_length=model.max_length, frame=data.frame, z_extent=self.z_extents[item.name],
            blur_sigma=data.blur_sigma)
        reader_ids = np.zeros(self.num_readers_padded, np.int32)
        if model.reader_conditioned:
            rows = reader_indices(model, [r.subject for r in item.readers],
                                  where=f"{data.data_dir}: CT {item.name!r}")
            reader_ids[:len(rows)] = rows
        gaze = np.zeros((self.num_readers_padded, model.max_length, 4), np.float32)
        gaze_length = np.zeros(self.num_readers_padded, np.int32)
        cells = np.zeros((self.num_readers_padded, model.max_length), np.int32)
        offsets = np.zeros((self.num_readers_padded, model.max_length, 3), np.float32)
        for r, sp in enumerate(item.readers):
            n = min(len(sp.x), model.max_length)
            gaze[r, :n] = np.stack([sp.x[:n], sp.y[:n], sp.z[:n], sp.t[:n]], axis=1)
            gaze_length[r] = n
            cells[r], offsets[r] = fixation_targets(sp.x, sp.y, sp.z, grid=model.grid,
                                                    max_length=model.max_length, frame=data.frame,
                                                    z_extent=self.z_extents[item.name])
        return {
            "tokens": tokens.astype(np.float32),
            "spatial": targets.spatial,
            "duration": targets.duration,
            "action_mask": targets.action_mask,
            "duration_mask": targets.duration_mask,
            "reader_mask": reader_mask,
            "reader_ids": reader_ids,
            "gaze": gaze,
            "gaze_length": gaze_length,
            "cells": cells,
            "offsets": offsets,
            "z_extent": np.float32(self.z_extents[item.name]),
            "ct_mask": np.float32(1.0),
        }


def _masked(example: Example) -> Example:
    """A padding example: same shapes, every mask 0 (contributes nothing to losses or metrics)."""
    out = dict(example)
    for key in ("action_mask", "duration_mask", "reader_mask", "gaze_length"):
        out[key] = np.zeros_like(example[key])
    out["ct_mask"] = np.float32(0.0)
    return out


def local_batch_size(batch_size: int, process_count: int) -> int:
    """CTs each process loads per global batch; ConfigError when B does not divide."""
    if batch_size % process_count:
        raise ConfigError(f"train.batch_size={batch_size} must be divisible by the number of "
                          f"processes ({process_count})")
    return batch_size // process_count


def _global_position(local_index: int, *, batch_size: int, local_batch: int,
                     process_index: int) -> tuple[int, int]:
    """(global step, slot in the global batch) of one process-local example index."""
    step, row = divmod(local_index, local_batch)
    return step, process_index * local_batch + row


def train_dataset(source: CTExampleSource, *, batch_size: int, seed: int, num_steps: int,
                  process_index: int = 0, process_count: int = 1):
    """grain MapDataset of this process's training batches (`num_steps` of them, in step order).

    Each element is an Example with a leading axis of batch_size / process_count.
    """
    n = len(source)
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ConfigError(f"train.batch_size={batch_size} exceeds the {n} training CTs; lower it")
    local = local_batch_size(batch_size, process_count)
    # Stream of CT indices, one fresh permutation per epoch (grain reseeds the shuffle per epoch).
    order = grain.MapDataset.range(n).shuffle(seed=seed % 2**32).repeat()

    def ct_index(local_index: int) -> int:
        step, slot = _global_position(local_index, batch_size=batch_size, local_batch=local,
                                      process_index=process_index)
        epoch, step_in_epoch = divmod(step, per_epoch)
        return int(order[epoch * n + step_in_epoch * batch_size + slot])

    return (grain.MapDataset.range(num_steps * local)
            .map(ct_index)
            .map(source.__getitem__)
            .batch(local, drop_remainder=True))


def eval_dataset(source: CTExampleSource, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1):
    """grain MapDataset of every CT of `source` in order, the last batch padded with masked CTs."""
    n = len(source)
    local = local_batch_size(batch_size, process_count)
    num_batches = -(-n // batch_size)

    def example(local_index: int) -> Example:
        step, slot = _global_position(local_index, batch_size=batch_size, local_batch=local,
                                      process_index=process_index)
        index = step * batch_size + slot
        return source[index] if index < n else _masked(source[0])

    return (grain.MapDataset.range(num_batches * local)
            .map(example)
            .batch(local, drop_remainder=True))


def make_iterator(dataset, *, num_threads: int = 2, prefetch: int = 2):
    """A prefetching grain iterator (threads: feature files are read with the GIL released).

    The iterator's `get_state()` / `set_state()` are what the checkpoint saves and restores.
    """
    return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                          prefetch_buffer_size=prefetch)))
