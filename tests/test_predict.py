"""`ctsearcher predict`: features -> model -> sampled scanpaths -> dataset records + figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.data import schema
from ctsearcher_jax.errors import CheckpointError
from ctsearcher_jax.io import file_sha256


@pytest.fixture(scope="module")
def setup(tmp_path_factory, repo_root):
    from flax import nnx

    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.model.ct_searcher import CTSearcher
    from ctsearcher_jax.model.serialization import save_model

    root = tmp_path_factory.mktemp("predict")
    # 32^3 encoder windows: prediction is under test, not the encoder (it has parity tests)
    cfg = config_lib.load(repo_root / "configs" / "tiny.yaml", ["eval.min_length=4",
                                                                "extract.roi=32"])
    save_model(root / "run" / "model", CTSearcher(cfg.model, rngs=nnx.Rngs(0)), cfg)
    synthesize(root / "data", num_cts=2, num_readers=2, seed=3, shape=(40, 40, 24),
               min_fixations=8, max_fixations=16)
    return root, cfg


@pytest.mark.slow
def test_predict_dataset_split_pairs_samples_with_readers(setup):
    from ctsearcher_jax.predict import predict_volumes

    root, cfg = setup
    items = schema.load_dataset(root / "data")
    vols = [root / "data" / "cts" / f"{it.name}.nii.gz" for it in items]
    readers = {it.name: it.readers for it in items}
    summary = predict_volumes(vols, root / "run", root / "out", samples=2, seed=1, readers=readers,
                              figure_limit=1, progress=False, swin_weights="random")
    assert summary.ok and summary.cts == [it.name for it in items]
    assert summary.extracted == summary.random_features == summary.cts
    preds = schema.load_records(summary.predictions, require_split=False)
    assert len(preds) == 2 * 2 * len(items)  # samples x readers per CT
    for it in items:
        mine = [p for p in preds if p.name == it.name]
        assert [p.subject for p in mine] == [r.subject for r in it.readers] * 2
        for p in mine:
            assert cfg.eval.min_length <= p.length <= cfg.model.max_length
            assert (p.t > 0).all() and (p.z <= 24).all()  # z_extent: volume in tiny.yaml
    figs = summary.figures[items[0].name]
    assert set(figs) == {"projections", "drilling", "density", "slices", "viewer"}
    assert all(p.stat().st_size > 1000 for p in figs.values())
    # Same seed, same scanpaths; the feature cache is reused.
    again = predict_volumes(vols, root / "run", root / "out2", samples=2, seed=1, readers=readers,
                            feature_dir=root / "out" / "features", figures=False, progress=False)
    assert json.loads(again.predictions.read_text()) == json.loads(summary.predictions.read_text())
    assert again.extracted == [] and again.random_features == summary.cts


def test_predict_never_replaces_cached_features_of_other_weights(setup):
    """Issue 16.1: a cache made with other weights is refused, not overwritten; a random encoder
    runs only when asked for."""
    import numpy as np

    from ctsearcher_jax.data import manifest as mf
    from ctsearcher_jax.data.nifti import volume_name
    from ctsearcher_jax.errors import DataError
    from ctsearcher_jax.predict import predict_volumes

    root, cfg = setup
    cts = sorted((root / "data" / "cts").glob("*.nii.gz"))
    # A cache as `extract --swin-weights random --seed 1` writes it (the refusals come before any
    # extraction, so the arrays only need to be intact).
    cache = root / "cache_seed1"
    cache.mkdir()
    entries = {}
    for ct in cts:
        name = volume_name(ct)
        np.save(cache / f"{name}.npy", np.zeros((cfg.model.feature_dim, 2, 2, 1), np.float32))
        entries[name] = {"channels": cfg.model.feature_dim, "grid_shape": [2, 2, 1],
                         "source_sha256": file_sha256(ct), "outputs": {"dec4": f"{name}.npy"},
                         "weights": {"kind": "random", "seed": 1, "sha256": "0" * 64,
                                     "feature_size": cfg.model.feature_dim // 16,
                                     "merging_order": "legacy"}}
    mf.write_manifest(cache / "manifest.json", entries)
    before = {p.name: p.read_bytes() for p in cache.iterdir()}
    # another random seed = other weights: refused, naming the recorded weights
    with pytest.raises(DataError, match=r"made with a random-initialised encoder .*seed 1.*never "
                                        r"replaces"):
        predict_volumes(cts, root / "run", root / "o1", swin_weights="random", seed=7,
                        feature_dir=cache, figures=False, progress=False)
    # a weights file of other content: refused the same way
    other = root / "other.safetensors"
    other.write_bytes(b"not the weights the cache was made with")
    with pytest.raises(DataError, match="never replaces"):
        predict_volumes(cts, root / "run", root / "o2", swin_weights=other, seed=1,
                        feature_dir=cache, figures=False, progress=False)
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == before
    # no --swin-weights and nothing cached: refused, nothing extracted
    with pytest.raises(DataError, match="extracts only when given --swin-weights"):
        predict_volumes(cts, root / "run", root / "o3", feature_dir=root / "empty", figures=False,
                        progress=False)
    assert not (root / "empty").exists() and not (root / "o3").exists()


def test_model_resolution_errors(setup, tmp_path):
    from ctsearcher_jax.model.serialization import resolve_model_dir

    root, _ = setup
    assert resolve_model_dir(root / "run") == root / "run" / "model"
    assert resolve_model_dir(root / "run" / "model") == root / "run" / "model"
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        resolve_model_dir(tmp_path)


@pytest.mark.cli
def test_predict_cli_errors(setup, tmp_path):
    root, _ = setup

    def run(*args):
        return subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "predict", *map(str, args)],
                              capture_output=True, text=True, timeout=600)

    out = run(root / "data" / "cts", "--model", tmp_path, "--out", tmp_path / "o")
    assert out.returncode == 2 and "no model.safetensors" in out.stderr
    out = run(tmp_path / "none.nii.gz", "--model", root / "run", "--out", tmp_path / "o")
    assert out.returncode == 2 and "none.nii.gz: no such CT" in out.stderr
    out = run("--data", root / "data", "--split", "nosplit", "--model", root / "run",
              "--out", tmp_path / "o")
    assert out.returncode == 2 and "no CT in split 'nosplit'" in out.stderr
    assert not (tmp_path / "o").exists()
