"""The planner's parts that need no compiler: topology names, HLO reading, the roofline, the
batch search, the out-of-memory message, the abstract batch against the real pipeline, and the
fine-tuning reward's kernel choice."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import tinydata  # tests/train is on the path (pyproject: pythonpath)

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.planning import hlo
from ctsearcher_jax.planning.analysis import Memory, ProgramPlan, parse_out_of_memory
from ctsearcher_jax.planning.chips import CHIPS, GIB, parse_topology
from ctsearcher_jax.planning.estimate import estimate
from ctsearcher_jax.planning.inputs import example_shapes
from ctsearcher_jax.planning.search import largest_batch
from ctsearcher_jax.train.finetune import reward_options

HLO = """HloModule jit_step, is_scheduled=true

%body.1 (p: (s32[], f32[8,16])) -> (s32[], f32[8,16]) {
  %ag = f32[32,16]{1,0} all-gather(f32[8,16]{1,0} %x), channel_id=3, replica_groups=[1,4]<=[4], dimensions={0}
  ROOT %t = (s32[], f32[8,16]) tuple(%i, %y)
}

%cond.1 (p: (s32[], f32[8,16])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main.9 (a: f32[1024], b: bf16[4,4]) -> f32[1024] {
  %ar = (f32[1024]{0}, bf16[4,4]{1,0}) all-reduce(%a, %b), channel_id=1, replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0','axis_1'}, to_apply=%add
  %rs = f32[256]{0} reduce-scatter(%a), channel_id=2, replica_groups={{0,1,2,3}}, dimensions={0}
  %w = (s32[], f32[8,16]) while(%init), condition=%cond.1, body=%body.1, backend_config={"known_trip_count":{"n":"5"}}
  %cp = f32[64]{0} collective-permute-start(%a), channel_id=4, source_target_pairs={{0,1}}
  %cpd = f32[64]{0} collective-permute-done(%cp)
  %cc = f32[3] custom-call(%a), custom_call_target="ctsearcher_scanmatch_gap0_f32"
  ROOT %r = f32[1024]{0} copy(%a)
}
"""


def test_topology_names():
    t = parse_topology("v5p:4x4x4")
    assert (t.chip.name, t.shape, t.chips) == ("v5p", (4, 4, 4), 64)
    assert parse_topology("V5E:2x2").chip is CHIPS["v5e"]
    for bad in ("v9:2x2", "v5e", "v5e:2x2x2", "v5p:2x2", "tpu-v5e-4"):
        with pytest.raises(ConfigError) as err:
            parse_topology(bad)
        for name in CHIPS:  # the message lists every known chip
            assert name in str(err.value)


def test_chip_table_has_sources():
    for chip in CHIPS.values():
        assert chip.source and chip.bf16_flops > 1e14 and chip.hbm_bytes >= 16 * GIB
        assert chip.hbm_bandwidth > 5e11 and chip.ici_bandwidth > 1e11


def test_collectives_per_chip_with_loop_trip_counts():
    found = {c.kind: c for c in hlo.collectives(HLO)}
    assert found["all-reduce"].count == 1 and found["all-reduce"].bytes == 1024 * 4 + 16 * 2
    assert found["reduce-scatter"].bytes == 256 * 4 * 4  # the input: result x group of 4
    assert found["all-gather"].count == 5 and found["all-gather"].bytes == 5 * 32 * 16 * 4
    assert found["collective-permute"].count == 1  # the -done is not counted again
    assert "all-to-all" not in found
    assert hlo.group_size("replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_1'}") == 2


def test_custom_calls_hlo_and_stablehlo():
    stable = 'stablehlo.custom_call @lapack_sgetrf(%0) : ...\n%1 = stablehlo.custom_call @Sharding'
    assert hlo.custom_call_targets(stable) == {"lapack_sgetrf", "Sharding"}
    targets = hlo.custom_call_targets(HLO)
    assert hlo.cpu_only_calls(targets) == ["ctsearcher_scanmatch_gap0_f32"]
    assert hlo.cpu_only_calls({"AssumeGatherIndicesInBound", "Sharding"}) == []


def test_roofline():
    chip = CHIPS["v5e"]
    # 1 s of FLOPs (0.5 s of them matrix products), 0.5 s of HBM traffic, 0.25 s of ICI
    e = estimate(197e12, 197e12 / 2, 819e9 * 0.5, 400e9 * 0.25, chip)
    assert e.compute_s == pytest.approx(1.0) and e.memory_s == pytest.approx(0.5)
    assert e.step_s == pytest.approx(1.25) and e.mfu == pytest.approx(0.4)
    assert e.bound == "compute"
    # XLA's count undercounts a loop: the matrix FLOPs decide the compute time then
    assert estimate(1.0, 197e12, 0, 0, chip).compute_s == pytest.approx(1.0)
    assert estimate(0, 0, 819e9, 0, chip).bound == "memory"


def test_matmul_flops_count_loops_by_trip_count():
    import jax
    import jax.numpy as jnp

    from ctsearcher_jax.planning.flops import matmul_flops

    def f(x):
        y = jax.lax.map(lambda r: jnp.tanh(r @ x), x)  # 4 rows x (2 * 4 * 4)
        return jax.lax.fori_loop(0, 3, lambda i, z: z @ x, y).sum()  # 3 x (2 * 4 * 4 * 4)

    assert matmul_flops(jax.jit(f).trace(jnp.ones((4, 4)))).flops == 128 + 384
    assert matmul_flops(jax.jit(jax.grad(f)).trace(jnp.ones((4, 4)))).flops == 3 * (128 + 384)

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    counted = matmul_flops(jax.jit(conv).trace(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 5))))
    assert counted.flops == 2 * (2 * 8 * 8 * 5) * (3 * 3 * 3)

    def dynamic(x, n):
        return jax.lax.fori_loop(0, n, lambda i, z: z @ x, x)

    counted = matmul_flops(jax.jit(dynamic).trace(jnp.ones((4, 4)), 3))
    assert counted.flops == 128 and counted.unknown_loops == 1


def test_matmul_flops_of_a_shard_map_count_every_device():
    """A shard_map body is one device's share (the Swin encoder's program): counted on each of
    the 4 chips of v5e:2x2 (libtpu's compile-only devices; traced, not compiled)."""
    import jax.numpy as jnp
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from ctsearcher_jax.planning.flops import matmul_flops
    from ctsearcher_jax.planning.topology import libtpu_installed, topology_devices

    if not libtpu_installed():
        pytest.skip("libtpu (the test extra) missing")
    devices = topology_devices(parse_topology("v5e:2x2"))
    mesh = Mesh(np.array(devices), ("data",))
    per_device = jax.shard_map(lambda a: a @ a.T, mesh=mesh, in_specs=P("data"),
                               out_specs=P("data"))
    x = jax.ShapeDtypeStruct((8, 4), jnp.float32)
    whole = matmul_flops(jax.jit(lambda a: a @ a.T).trace(x)).flops  # 2 * 8 * 8 * 4
    shares = matmul_flops(jax.jit(per_device).trace(x)).flops  # 4 x (2 * 2 * 2 * 4)
    assert (whole, shares) == (512, 128)



def test_out_of_memory_message():
    msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
           "temporaries (25.38G) exceeds available HBM (15.75G).")
    required, available = parse_out_of_memory(msg)
    assert required == int(25.38 * GIB) and available == int(15.75 * GIB)
    assert parse_out_of_memory("Used 20.5G of 15.75G hbm. Exceeded hbm capacity by 4.75G.") == (
        int(20.5 * GIB), int(15.75 * GIB))
    assert parse_out_of_memory("RESOURCE_EXHAUSTED: something else") == (None, None)


def _fake_plan(b: int, base: int, slope: int, hbm: int) -> ProgramPlan:
    """A plan whose memory is exactly base + slope * b (fits when <= hbm)."""
    used = base + slope * b
    memory = Memory(used, 0, 0, 0, 0) if used <= hbm else None
    return ProgramPlan(None, CHIPS["v5e"], 0.0, 0.0, used <= hbm, memory,
                       None if used <= hbm else used, hbm, 1.0, 1.0, 1.0, (), (), None)


@pytest.mark.parametrize("base,slope,step,start", [(3, 2, 1, 1), (100, 7, 1, 2), (10, 3, 2, 2),
                                                   (1, 50, 1, 1), (90, 1, 1, 4)])
def test_largest_batch_is_exact_in_three_compilations(base, slope, step, start):
    hbm = 100
    seen = []

    def measure(b):
        seen.append(b)
        return _fake_plan(b, base, slope, hbm)

    result = largest_batch(measure, start=start, step=step, hbm=hbm)
    best = max((b for b in range(step, 200, step) if base + slope * b <= hbm), default=0)
    assert result.per_chip == best
    assert result.compilations == len(seen) <= 3 + (best == 0)


def _plan_of(used: int, fits: bool, hbm: int) -> ProgramPlan:
    return ProgramPlan(None, CHIPS["v5e"], 0.0, 0.0, fits, Memory(used, 0, 0, 0, 0) if fits else None,
                       None if fits else used, hbm, 1.0, 1.0, 1.0, (), (), None)


def _remat_plan(b: int) -> ProgramPlan:
    """HBM 100: memory 10 + b up to 85; then, as the TPU compiler rematerialising near the
    limit, flat at 93-95 up to 120, the largest batch that fits; above it 10 + b (fails)."""
    return _plan_of(10 + b if b <= 85 or b > 120 else 95 - b % 3, b <= 120, 100)


def _reserved_plan(b: int) -> ProgramPlan:
    """HBM 16 GiB, memory affine, but the compiler keeps 64 MiB for itself: batches whose bytes
    are just under the HBM fail (libtpu's tiny predict program does this: 78177 CTs per chip
    fail needing 16.00 GiB, 76955 fail needing 15.75)."""
    used = 1_000_000 + 219_800 * b
    return _plan_of(used, used <= 16 * GIB - 64 * 2**20, 16 * GIB)


@pytest.mark.parametrize("curve,hbm,best", [(_remat_plan, 100, 120),
                                            (_reserved_plan, 16 * GIB, 77851)])
@pytest.mark.parametrize("start", [1, 4, 64, 100, 119])
def test_largest_batch_brackets_when_memory_is_not_affine_at_the_limit(curve, hbm, best, start):
    """A flat stretch (slope <= 0, points off the line) or failures below the HBM must not end
    the search at a small batch that merely fits, nor make it creep one batch at a time past
    failures: it brackets the true maximum within 8 compilations."""
    from ctsearcher_jax.planning.report import search_verdict

    result = largest_batch(curve, start=start, step=1, hbm=hbm)
    failed = [b for b, ok, _ in result.tried if not ok]
    assert result.compilations <= 8 and result.plan is not None and result.plan.fits
    assert failed and result.per_chip <= best < min(failed)  # the true maximum is bracketed
    assert result.per_chip >= 0.9 * best  # near it (the earlier search: 95 and 2 from start 1)
    assert "between" in search_verdict(result)


def test_example_shapes_match_the_pipeline(tmp_path):
    from ctsearcher_jax.data.pipeline import CTExampleSource, max_readers
    from ctsearcher_jax.data.schema import load_dataset

    root = tinydata.write_tiny_dataset(tmp_path, num_train=3, num_test=0)
    config = config_lib.from_dict(tinydata.tiny_config_dict(root))
    items = load_dataset(config.data.data_dir)
    readers = max_readers(items)
    example = CTExampleSource(tuple(items), config, readers)[0]
    expected = example_shapes(config, readers)
    assert set(example) == set(expected)
    for key, value in example.items():
        shape, dtype = expected[key]
        assert (np.shape(value), np.asarray(value).dtype) == (shape, dtype), key


def test_reward_kernel_follows_the_compiled_platform():
    """A fine-tuning step compiled for an accelerator from a CPU host (the planner's CUDA
    lowering) gets the jnp stripe kernel; otherwise the kernel follows the step's devices."""
    cpu = jax.local_devices()[:1]
    assert reward_options(cpu, "cuda") == {"kernel": "stripe", "group_size": None, "devices": cpu}
    assert reward_options(cpu, "tpu")["kernel"] == "stripe"
    one_cpu = reward_options(cpu)
    assert "kernel" not in one_cpu and one_cpu["group_size"] == 16  # choose_kernel decides
    assert reward_options(cpu, "cpu") == one_cpu


def test_search_verdict_says_what_was_proven():
    from ctsearcher_jax.planning.report import search_verdict
    from ctsearcher_jax.planning.search import BatchSearch

    bracketed = BatchSearch(5, None, ((1, True, 10), (2, True, 20), (5, True, 50), (6, False, 60)))
    assert "between 5 (fits) and 6 (does not)" in search_verdict(bracketed)
    # near the HBM limit memory stops being affine and the search stops without a failure
    flat = BatchSearch(343, None, ((1, True, 1), (289, True, 97), (306, True, 98), (343, True, 97)))
    assert "not a proven maximum" in search_verdict(flat)
