"""Baseline scanpaths: determinism, ranges, the drilling sweep, the human-consistency pairing, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ctsearcher_jax import baselines
from ctsearcher_jax.data.schema import CTItem, Scanpath, load_dataset, load_records, scanpaths_to_records
from ctsearcher_jax.data.synthetic import synthesize
from ctsearcher_jax.io import atomic_write_json

RANDOM = ("uniform", "centre", "drilling")


def sp(name, subject, n, rng, split="train") -> Scanpath:
    return Scanpath(name=name, subject=subject, split=split,
                    x=rng.uniform(150, 350, n), y=rng.uniform(100, 400, n),
                    z=rng.integers(1, 30, n).astype(float), t=rng.lognormal(np.log(0.3), 0.5, n))


@pytest.fixture(scope="module")
def items() -> list[CTItem]:
    rng = np.random.default_rng(0)
    out = []
    for c, (split, readers) in enumerate([("train", 2), ("train", 3), ("test", 2), ("test", 3),
                                          ("test", 1)]):
        name = f"ct_{c}"
        out.append(CTItem(name, split, tuple(sp(name, r + 1, int(rng.integers(3, 40)), rng, split)
                                             for r in range(readers))))
    return out


@pytest.fixture(scope="module")
def stats(items) -> baselines.ScanpathStats:
    return baselines.ScanpathStats.from_items([it for it in items if it.split == "train"])


def test_stats_from_training(items, stats):
    train = [r for it in items if it.split == "train" for r in it.readers]
    assert sorted(stats.lengths.tolist()) == sorted(r.length for r in train)
    log_t = np.log(np.concatenate([r.t for r in train]))
    assert stats.log_duration_mean == pytest.approx(log_t.mean())
    assert stats.log_duration_std == pytest.approx(log_t.std())
    x = np.concatenate([r.x for r in train])
    assert stats.xy_sigma[0] == pytest.approx(np.sqrt(np.mean((x - 256.5) ** 2)))
    with pytest.raises(Exception, match="split 'train'"):
        baselines.ScanpathStats.from_items([])


@pytest.mark.parametrize("kind", RANDOM)
def test_random_baselines_are_deterministic_and_in_range(kind, items, stats):
    test = [it for it in items if it.split == "test"]
    counts = {"ct_2": 20, "ct_3": 7}
    a = baselines.generate(kind, test, seed=5, stats=stats, samples_per_reader=2,
                           slice_counts=counts, z_extent=50)
    b = baselines.generate(kind, test, seed=5, stats=stats, samples_per_reader=2,
                           slice_counts=counts, z_extent=50)
    c = baselines.generate(kind, test, seed=6, stats=stats, samples_per_reader=2,
                           slice_counts=counts, z_extent=50)
    assert len(a) == 2 * sum(it.num_readers for it in test)
    for p, q in zip(a, b):
        assert (p.name, p.subject) == (q.name, q.subject)
        for f in "xyzt":
            np.testing.assert_array_equal(getattr(p, f), getattr(q, f))
    assert any(not np.array_equal(p.x, q.x) for p, q in zip(a, c))
    # Sample-major blocks: block s of a CT lists its readers in order.
    assert [(p.name, p.subject) for p in a[:4]] == [("ct_2", 1), ("ct_2", 2)] * 2
    for p in a:
        limit = counts.get(p.name, 50)
        assert p.length in set(stats.lengths.tolist())
        assert np.all((p.x >= 1) & (p.x <= 512) & (p.y >= 1) & (p.y <= 512))
        assert np.all((p.z >= 1) & (p.z <= limit)) and np.all(p.z == np.round(p.z))
        assert np.all(p.t > 0) and np.all(np.isfinite(p.t))
    # Records validate as predictions (no split) with the CT's slice count as the Z bound.
    records = scanpaths_to_records(a)
    assert all("split" not in r for r in records)


def test_a_ct_does_not_depend_on_the_others(items, stats):
    test = [it for it in items if it.split == "test"]
    alone = baselines.generate("uniform", test[1:2], seed=1, stats=stats)
    together = baselines.generate("uniform", test, seed=1, stats=stats)
    mine = [p for p in together if p.name == test[1].name]
    assert len(alone) == len(mine)
    for p, q in zip(alone, mine):
        np.testing.assert_array_equal(p.x, q.x)


def test_drilling_sweeps_down_and_centre_is_central(items, stats):
    test = [it for it in items if it.split == "test"]
    drill = baselines.generate("drilling", test, seed=0, stats=stats, samples_per_reader=3)
    assert all(np.all(np.diff(p.z) >= 0) for p in drill)
    big = baselines.ScanpathStats(lengths=np.array([4000]), log_duration_mean=np.log(0.3),
                                  log_duration_std=0.4, xy_sigma=(60.0, 40.0))
    single = [it for it in test if it.num_readers == 1]
    (centre,) = baselines.generate("centre", single, seed=0, stats=big)
    (uniform,) = baselines.generate("uniform", single, seed=0, stats=big)
    assert abs(np.mean(centre.x) - 256.5) < 5 and 55 < np.std(centre.x) < 65
    assert 35 < np.std(centre.y) < 45
    assert 140 < np.std(uniform.x) < 155                # 511 / sqrt(12) = 147.5
    assert np.exp(np.median(np.log(uniform.t))) == pytest.approx(0.3, rel=0.05)
    (walk,) = baselines.generate("drilling", single, seed=0, stats=big)
    lag1 = np.corrcoef(walk.x[:-1], walk.x[1:])[0, 1]
    assert lag1 == pytest.approx(baselines.DRILL_CORRELATION, abs=0.05)
    assert 50 < np.std(walk.x) < 70


def test_unknown_baseline_and_missing_stats(items):
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.generate("oracle", items, seed=0)
    with pytest.raises(ValueError, match="ScanpathStats"):
        baselines.generate("uniform", items, seed=0)


def test_human_pairs_never_pair_a_reader_with_itself(items):
    pairs = baselines.human_consistency_pairs(items)
    assert len(pairs) == sum(it.num_readers * (it.num_readers - 1) for it in items)
    assert all(p is not g and p.name == g.name for p, g in pairs)
    assert len({(id(p), id(g)) for p, g in pairs}) == len(pairs)


def test_human_predictions_scored_diagonally_equal_the_protocols_human_row(items):
    """The file form, scored by the original protocol, is exactly `protocol.human_consistency`."""
    from ctsearcher_jax.metrics import protocol

    test = [it for it in items if it.num_readers > 1]
    preds = baselines.human_consistency_predictions(test)
    assert len(preds) == sum(it.num_readers * (it.num_readers - 1) for it in test)
    pred_cts = [[p.as_array() for p in preds if p.name == it.name] for it in test]
    gt_cts = baselines.readers_as_arrays(test)
    direct = baselines.score_human_consistency(test, families=("sed",))
    # Blocks per CT differ (readers - 1), so score each CT with its own repeat count.
    via_file = np.concatenate([
        protocol.original_protocol([g], [p], families=("sed",), repeats=len(g) - 1).scores["sed"]
        for g, p in zip(gt_cts, pred_cts)])
    assert sorted(via_file.tolist()) == sorted(direct.scores["sed"].tolist())
    for item, block in zip(test, pred_cts):
        for s in range(item.num_readers - 1):       # block s, reader i: never reader i itself
            for i, reader in enumerate(item.readers):
                assert not np.array_equal(block[s * item.num_readers + i], reader.as_array())


# ------------------------------------------------------------------ CLI

def ctsearcher(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_cts=4, num_readers=2, seed=1, shape=(24, 24, 16), min_fixations=4,
               max_fixations=10)
    return out


@pytest.mark.cli
def test_baselines_cli_writes_valid_prediction_files(dataset, tmp_path):
    out = ctsearcher("baselines", "--data", dataset, "--out", tmp_path / "bl", "--samples", "2",
                     "--seed", "3")
    assert out.returncode == 0, out.stderr
    test = load_dataset(dataset, split="test")
    for name in baselines.BASELINES:
        path = tmp_path / "bl" / f"{name}.json"
        assert str(path) in out.stdout
        records = load_records(path, require_split=False, default_z_limit=16)
        assert {r.name for r in records} == {it.name for it in test}
        per_ct = 2 * 2 if name != "human" else 2
        assert len(records) == per_ct * len(test)
    again = ctsearcher("baselines", "--data", dataset, "--out", tmp_path / "one.json",
                       "--baseline", "drilling", "--samples", "2", "--seed", "3")
    assert again.returncode == 0, again.stderr
    assert (json.loads((tmp_path / "one.json").read_text())
            == json.loads((tmp_path / "bl" / "drilling.json").read_text()))


@pytest.mark.cli
def test_baselines_cli_errors(dataset, tmp_path, cli_run):
    out = cli_run("baselines", "--data", dataset, "--out", tmp_path / "x.json")
    assert out.returncode == 2 and "exactly one --baseline" in out.stderr
    out = cli_run("baselines", "--data", dataset, "--out", tmp_path, "--split", "valid")
    assert out.returncode == 2 and "no CT in split 'valid'" in out.stderr
    out = cli_run("baselines", "--data", dataset, "--out", tmp_path, "--baseline", "oracle")
    assert out.returncode == 2 and "oracle" in out.stderr
    # Without cts/, --z-extent volume cannot work; an explicit extent does.
    bare = tmp_path / "bare"
    records = json.loads((dataset / "data_simplified_split_matched_pt.json").read_text())
    atomic_write_json(bare / "data_simplified_split_matched_pt.json", records)
    out = cli_run("baselines", "--data", bare, "--out", tmp_path / "b")
    assert out.returncode == 2 and "--z-extent" in out.stderr
    out = cli_run("baselines", "--data", bare, "--out", tmp_path / "b", "--z-extent", "40")
    assert out.returncode == 0, out.stderr
