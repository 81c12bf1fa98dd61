"""Fixtures of the original CT-Searcher reference (tests/fixtures/model) shared by the model tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "model"


@pytest.fixture(scope="session")
def model_fixtures() -> Path:
    return FIX


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """Every array of ctsearcher_small.npz (weights, outputs, targets, losses, grad/*, adamw_step1/*)."""
    with np.load(FIX / "ctsearcher_small.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def state_dict(reference) -> dict[str, np.ndarray]:
    """The original model's state_dict (77 torch keys, torch layouts)."""
    keys = [k for k, _, _ in json.loads((FIX / "ctsearcher_small.json").read_text())["state_dict_keys"]]
    return {k: reference[k] for k in keys}


@pytest.fixture(scope="session")
def src() -> np.ndarray:
    """The reference input (2, 512, 768), regenerated with torch's seeded generator (3 MB not stored)."""
    import torch

    return torch.randn(2, 512, 768, generator=torch.Generator().manual_seed(1235)).numpy()


@pytest.fixture(scope="session")
def imported_model(state_dict):
    """CTSearcher holding the original's weights (legacy layout, stored PE table)."""
    from flax import nnx

    from ctsearcher_jax.model import upstream
    from ctsearcher_jax.model.ct_searcher import CTSearcher

    config = upstream.infer_config(state_dict, num_heads=4)
    model = CTSearcher(config, rngs=nnx.Rngs(0))
    upstream.load_upstream_state(model, state_dict)
    return model


def assert_close_rel(ours, ref, rel: float, what: str = "") -> float:
    """|ours - ref| <= rel * max|ref| elementwise (relative to the tensor's scale); returns the error."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))
    assert err <= rel, f"{what}: relative error {err:.3g} > {rel}"
    return err


@pytest.fixture(scope="session")
def close_rel():
    return assert_close_rel
