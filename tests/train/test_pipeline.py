"""Input pipeline: per-epoch shuffles, process sharding, reader padding, checkpointable state."""

from __future__ import annotations

import numpy as np
import pytest
import tinydata  # tests/train is on the path (pyproject: pythonpath)

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.data.pipeline import (
    CTExampleSource,
    eval_dataset,
    make_iterator,
    max_readers,
    train_dataset,
)
from ctsearcher_jax.data.schema import load_dataset
from ctsearcher_jax.errors import ConfigError


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tinydata.write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    config = from_dict(tinydata.tiny_config_dict(root))
    items = load_dataset(root / "data")
    train = tuple(it for it in items if it.split == "train")
    return CTExampleSource(train, config, max_readers(items))


def _names(source, batch):
    # identify CTs by their tokens (each CT's random features are distinct)
    table = {source[i]["tokens"].tobytes(): source.items[i].name for i in range(len(source))}
    return [table[t.tobytes()] for t in batch["tokens"]]


def test_example_shapes_and_reader_padding(source):
    assert source.num_readers_padded == 3
    ex = source[0]  # ct_000 has 1 reader
    assert ex["tokens"].shape == (8, tinydata.FEATURE_DIM)
    assert ex["spatial"].shape == (3, 8, 9)
    assert ex["duration"].shape == ex["action_mask"].shape == (3, 8)
    np.testing.assert_array_equal(ex["reader_mask"], [1, 0, 0])
    assert ex["action_mask"][1:].sum() == 0 and ex["action_mask"][0].sum() >= 1
    np.testing.assert_array_equal(source[2]["reader_mask"], [1, 1, 1])


def test_epochs_are_permutations_with_fresh_order(source):
    b, per_epoch = 2, len(source) // 2
    ds = train_dataset(source, batch_size=b, seed=5, num_steps=3 * per_epoch)
    epochs = []
    for e in range(3):
        names = [nm for s in range(per_epoch) for nm in _names(source, ds[e * per_epoch + s])]
        assert sorted(names) == sorted(it.name for it in source.items)
        epochs.append(names)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    other = train_dataset(source, batch_size=b, seed=6, num_steps=per_epoch)
    assert [nm for s in range(per_epoch) for nm in _names(source, other[s])] != epochs[0]


def test_process_shards_concatenate_to_the_global_batch(source):
    kw = dict(batch_size=4, seed=1, num_steps=3)
    whole = train_dataset(source, **kw)
    parts = [train_dataset(source, process_index=p, process_count=2, **kw) for p in range(2)]
    for s in range(3):
        for key in whole[s]:
            joined = np.concatenate([parts[0][s][key], parts[1][s][key]])
            np.testing.assert_array_equal(joined, whole[s][key])


def test_iterator_state_resumes_exactly(source):
    ds = train_dataset(source, batch_size=2, seed=2, num_steps=7)
    it = make_iterator(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    rest = [next(it)["tokens"] for _ in range(4)]
    fresh = make_iterator(ds)
    fresh.set_state(state)
    for expected in rest:
        np.testing.assert_array_equal(next(fresh)["tokens"], expected)
    with pytest.raises(StopIteration):
        next(fresh)


def test_eval_dataset_pads_last_batch_with_masked_cts(source):
    ds = eval_dataset(source, batch_size=4)  # 6 CTs -> 2 batches, 2 padding rows
    assert len(ds) == 2
    last = ds[1]
    np.testing.assert_array_equal(last["ct_mask"], [1, 1, 0, 0])
    assert last["reader_mask"][2:].sum() == 0 and last["action_mask"][2:].sum() == 0


def test_batch_not_divisible_by_processes_is_config_error(source):
    with pytest.raises(ConfigError, match="divisible"):
        train_dataset(source, batch_size=3, seed=0, num_steps=1, process_count=2)
    with pytest.raises(ConfigError, match="exceeds"):
        train_dataset(source, batch_size=64, seed=0, num_steps=1)


def test_z_extent_volume_bins_z_over_the_ct_slice_count(tmp_path):
    import dataclasses
    import json

    from ctsearcher_jax.data.schema import CTItem, Scanpath

    root = tinydata.write_tiny_dataset(tmp_path, num_train=2, num_test=0)
    config = from_dict(tinydata.tiny_config_dict(root))  # grid (2, 2, 2)
    z = np.array([60.0, 300.0])
    reader = Scanpath(name="ct_000", subject=1, split="train", x=np.array([10.0, 10.0]),
                      y=np.array([10.0, 10.0]), z=z, t=np.array([0.2, 0.3]))
    item = CTItem(name="ct_000", split="train", readers=(reader,))
    manifest = {"format": "ctsearcher-features/1",
                "volumes": {"ct_000": {"volume_shape": [512, 512, 100]}}}
    (root / "features" / "manifest.json").write_text(json.dumps(manifest))

    fixed = CTExampleSource((item,), config, 1)[0]["spatial"][0]
    volume_cfg = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      z_extent="volume"))
    volume = CTExampleSource((item,), volume_cfg, 1)[0]["spatial"][0]
    # class = 1 + iy*Gx*Gz + ix*Gz + iz with iy = ix = 0: the Z cell alone
    assert list(fixed[:2].argmax(-1)) == [1, 1 + 1]  # 512 slices: z 60 -> cell 0, 300 -> cell 1
    assert list(volume[:2].argmax(-1)) == [1 + 1, 1 + 1]  # 100 slices: both in the upper half
