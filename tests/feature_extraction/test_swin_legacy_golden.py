"""Swin UNETR against the golden file made with the copy bundled in the original (legacy
PatchMerging order), and the bfloat16 compute option against float32 on the same 96^3 input.

Fixture `tests/fixtures/swin/swin_unetr_legacy_small.npz`: `shared/reference/swin_unetr_legacy_small.npz`
(reference README section 7: feature_size 12, seed 7, biases and norms perturbed) without its
`relative_position_index` buffers (recomputed by the converter), recompressed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from feature_extraction.convert_monai import convert_state_dict
from feature_extraction.swin_unetr import SwinUNETR

sys.path.insert(0, str(Path(__file__).parent))  # tests/ has no packages: import the helper by path
from swin_helpers import rel_err, run  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "swin" / "swin_unetr_legacy_small.npz"
# bfloat16 error bound (max abs error / max abs value per output). Measured on this input:
# see test output (`-s`) and the README table; the bound only catches a broken bf16 path.
BF16_BOUND = 0.1
# The encoder at 96^3 in float32 and bfloat16 (23 s): full suite only, as the MONAI parity tests.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURE, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    sd = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    return sd, data


def _model(sd, dtype: str) -> SwinUNETR:
    from flax import nnx

    from feature_extraction.weights import set_params

    config, parts, params = convert_state_dict(sd, "legacy")
    assert parts == "encoder"
    config = dataclasses.replace(config, dtype=dtype)
    model = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts=parts))
    set_params(model, params)
    return model


@pytest.fixture(scope="module")
def fp32_outputs(golden):
    sd, data = golden
    return run(_model(sd, "float32"), data["input"], "encode")


def test_legacy_golden_within_1e4(golden, fp32_outputs):
    _, data = golden
    hs, dec4 = fp32_outputs
    for i in range(5):
        ref = data[f"out/hidden_states_out_{i}"]
        assert hs[i].shape == ref.shape
        assert rel_err(hs[i], ref) < 1e-4, f"hidden_states_out[{i}]"
    assert rel_err(dec4, data["out/dec4"]) < 1e-4


def test_bfloat16_error_against_float32(golden, fp32_outputs):
    sd, data = golden
    hs16, dec16 = run(_model(sd, "bfloat16"), data["input"], "encode")
    hs32, dec32 = fp32_outputs
    errs = [rel_err(hs16[i], hs32[i]) for i in range(5)] + [rel_err(dec16, dec32)]
    print("bf16 vs fp32 rel err hs0..4, dec4:", " ".join(f"{e:.2e}" for e in errs))
    assert all(np.isfinite(errs)) and max(errs) < BF16_BOUND
    assert max(errs) > 0  # it really ran in bfloat16
