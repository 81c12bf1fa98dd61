"""Every program lowers for CUDA on this CPU-only machine (XLA attention: cuDNN needs cuDNN at
trace time), and no lowered program contains a CPU-only custom call."""

from __future__ import annotations

import pytest

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.planning import programs
from ctsearcher_jax.planning.cuda import lower_for_cuda


@pytest.fixture(scope="module")
def config():
    return config_lib.load("tiny", ["extract.roi=32", "extract.batch=1",
                                    "model.compute_dtype=bfloat16"])


@pytest.mark.parametrize("name", programs.PROGRAMS)
def test_lowers_for_cuda_without_cpu_custom_calls(config, name):
    lowered = lower_for_cuda(name, config, 1)
    assert lowered.cpu_only_calls == (), lowered.custom_calls
    assert "cudnn" not in lowered.attention.values()  # traced on CPU: the XLA path
    if name in ("predict", "extract"):  # training with attention dropout: explicit softmax
        assert lowered.attention  # `nn/attention.py` was traced (bfloat16 shapes of this file)


@pytest.mark.parametrize("name", ["finetune", "predict"])
def test_the_autoregressive_programs_lower_for_cuda(name):
    """CT-Searcher AR: the planner compiles its own sampler (the lax.scan) and its fine-tuning
    step (its samples, their teacher-forced log p), with no CPU-only custom call."""
    ar = config_lib.load("tiny", ["model.arch=ct_searcher_ar", "model.num_decoder_layers=2",
                                  "model.compute_dtype=bfloat16"])
    lowered = lower_for_cuda(name, ar, 1)
    assert lowered.cpu_only_calls == (), lowered.custom_calls
