"""`metrics.scanmatch.choose_kernel`, the one function that picks the ScanMatch kernel, decides
from where the computation runs: one CPU device -> native (stripe, with one warning, when the
library does not build), several devices or accelerators -> stripe inside a step, and the
evaluation -> native on the host's CPU device whatever the default backend.

Accelerators are stand-ins (this machine has no TPU, and `jax.experimental.topologies` needs
libtpu): device objects with `platform == "tpu"`, in a real `jax.sharding.Mesh` and
`NamedSharding`, as a train step's shardings would hold them."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ctsearcher_jax.metrics import scanmatch as sm
from ctsearcher_jax.metrics.scanmatch import native
from ctsearcher_jax.metrics.scanmatch import reward as rw
from ctsearcher_jax.runtime import native as runtime_native


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """Enough of a jax.Device for a Mesh, a NamedSharding and `choose_kernel`."""

    id: int
    platform: str = "tpu"
    process_index: int = 0


def _mesh(n, platform="tpu"):
    return Mesh(np.array([FakeDevice(i, platform) for i in range(n)]), ("data",))


def _no_build(monkeypatch):
    """Fail the test if the choice asks for the native library (it must not need it)."""
    def fail():
        raise AssertionError("choose_kernel consulted the native library")
    monkeypatch.setattr(native, "available", fail)


def _pairs():
    rng = np.random.default_rng(0)
    coords = jnp.asarray(rng.uniform(0, 512, (3, 5, 3)), jnp.float32)
    durations = jnp.full((3, 5), 0.2, jnp.float32)
    length = jnp.array([5, 2, 4])
    return coords, durations, length, coords[::-1], durations, length[::-1]


def test_one_cpu_device_takes_the_native_kernel_in_a_step_and_in_the_evaluation():
    cpu = jax.local_devices(backend="cpu")[0]
    mesh = Mesh(np.array([cpu]), ("data",))
    for placement in ([cpu], cpu, mesh, NamedSharding(mesh, PartitionSpec()),
                      {"state": [NamedSharding(mesh, PartitionSpec()), None]}):
        choice = sm.choose_kernel(step=True, devices=placement)
        assert (choice.name, choice.platform, choice.sharded) == ("native", "cpu", False), placement
    assert sm.default_group_size([cpu]) == sm.CPU_GROUP_SIZE
    evaluation = sm.choose_kernel()
    assert evaluation.name == "native" and evaluation.device == cpu
    assert sm.choose_kernel("stripe", step=True, devices=[cpu]).name == "stripe"  # forced


def test_no_native_library_falls_back_to_the_stripe_kernel_with_one_warning(
        tmp_path, monkeypatch, caplog):
    """A copy of the kernel's source that cannot be built (no compiler): both choices fall back,
    and the reason is warned once, however often the choice is made."""
    source = tmp_path / "scanmatch_gap0.cc"
    shutil.copy(native.SOURCE, source)
    monkeypatch.setattr(native, "SOURCE", str(source))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv(runtime_native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(runtime_native.ENV, raising=False)
    cpu = jax.local_devices(backend="cpu")[0]
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.runtime.native"):
        for _ in range(3):
            assert sm.choose_kernel(step=True, devices=[cpu]).name == "stripe"
            evaluation = sm.choose_kernel()
            assert (evaluation.name, evaluation.platform) == ("stripe", jax.default_backend())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "using the jnp kernel" in warnings[0], warnings
    assert sm.choose_kernel("native").name == "native"  # forced: the call itself says why


@pytest.mark.parametrize("platform", ["cpu", "tpu"])
def test_several_devices_take_the_stripe_kernel_in_one_call(monkeypatch, platform):
    """A sharded step (a mesh of 8 devices, CPU or TPU): a native custom call would gather the
    batch onto every device, a sort too; so the stripe kernel, all pairs in one call."""
    _no_build(monkeypatch)
    mesh = _mesh(8, platform)
    shardings = {"params": NamedSharding(mesh, PartitionSpec("data")),
                 "metrics": NamedSharding(mesh, PartitionSpec())}
    for placement in (mesh, shardings, list(mesh.devices.flat)):
        choice = sm.choose_kernel(step=True, devices=placement)
        assert (choice.name, choice.platform, choice.sharded) == ("stripe", platform, True)
        assert sm.default_group_size(placement) is None
    assert len(sm.devices_of(shardings)) == 8


def test_accelerator_devices_take_the_stripe_kernel_whatever_the_default_backend(monkeypatch):
    """A step compiled for one TPU device on this CPU-only process: the stripe kernel (the
    custom call exists for CPU only), and the reward traced for it has no custom call."""
    _no_build(monkeypatch)
    tpu = _mesh(1)
    choice = sm.choose_kernel(step=True, devices=tpu)
    assert (choice.name, choice.platform, choice.sharded) == ("stripe", "tpu", False)
    assert sm.default_group_size(tpu) is None
    args = _pairs()
    traced = str(jax.make_jaxpr(lambda *a: rw.hmean_reward(
        *(x[:, None] if i >= 3 else x for i, x in enumerate(a)), devices=tpu))(*args))
    assert "ffi_call" not in traced


def test_the_reward_takes_the_custom_call_only_on_one_cpu_device():
    """The same reward traced for this process's one CPU device: the native custom call."""
    cpu = jax.local_devices(backend="cpu")[0]
    args = _pairs()
    traced = str(jax.make_jaxpr(lambda *a: rw.scanmatch_pairs(*a, devices=[cpu]))(*args))
    assert "ffi_call" in traced
    two = _mesh(2, "cpu")
    assert "ffi_call" not in str(jax.make_jaxpr(lambda *a: rw.scanmatch_pairs(*a, devices=two))(*args))


def test_evaluation_on_an_accelerator_backend_runs_native_on_the_host_cpu(monkeypatch):
    """On a GPU/TPU machine the evaluation keeps ScanMatch on this process's CPU device;
    kernel="stripe" keeps it on the card; without a CPU backend it is the stripe kernel."""
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    cpu = jax.local_devices(backend="cpu")[0]
    choice = sm.choose_kernel()
    assert (choice.name, choice.platform, choice.device) == ("native", "cpu", cpu)
    stripe = sm.choose_kernel("stripe")
    assert (stripe.name, stripe.platform, stripe.device) == ("stripe", "tpu", None)

    def no_cpu_backend(backend=None):
        raise RuntimeError(f"Unknown backend {backend}")
    monkeypatch.setattr(jax, "local_devices", no_cpu_backend)
    assert sm.choose_kernel() == sm.KernelChoice("stripe", "tpu")
    assert sm.choose_kernel("native").name == "native"  # forced: the call itself says why


def test_other_gaps_and_bad_arguments():
    masked = sm.choose_kernel(gap=-0.5)
    assert masked.name == "masked"
    with pytest.raises(ValueError, match="gap 0 only"):
        sm.choose_kernel(gap=-0.5, step=True)
    with pytest.raises(ValueError, match="kernel must be one of auto, native, stripe"):
        sm.choose_kernel("fast")
    with pytest.raises(ValueError, match="step=True"):
        sm.choose_kernel(devices=jax.devices())
    with pytest.raises(TypeError, match="not a device, mesh or sharding"):
        sm.devices_of(["cpu"])
