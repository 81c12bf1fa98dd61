"""Every program compiled by the real TPU compiler for v5e:2x2 on this CPU-only machine (libtpu's
compile-only devices): the tiny config's train and finetune (on a data 2 x fsdp 2 mesh),
predict, and a small Swin UNETR encoder all fit, and none contains a CPU-only custom call."""

from __future__ import annotations

import json

import jax
import pytest

from ctsearcher_jax import cli
from ctsearcher_jax import config as config_lib
from ctsearcher_jax.planning import hlo, programs, report
from ctsearcher_jax.planning.analysis import lower
from ctsearcher_jax.planning.planner import plan
from ctsearcher_jax.planning.topology import libtpu_installed

pytestmark = [pytest.mark.skipif(not libtpu_installed(), reason="libtpu (the test extra) missing"),
              pytest.mark.slow]  # the TPU compiler: minutes on 2 cores (make test, not make check)

# A small encoder (32^3 windows compile in seconds; the 96^3 one takes minutes on 2 cores) and
# parameters split over an fsdp axis of 2 (so one compilation checks both mesh axes).
OVERRIDES = ["extract.roi=32", "extract.batch=1", "train.fsdp=2"]


@pytest.fixture(scope="module")
def tiny_plan():
    config = config_lib.load("tiny", OVERRIDES)
    return plan("v5e:2x2", config, ["all"], config_name="tiny")


def test_every_program_fits(tiny_plan):
    assert [p.program.name for p in tiny_plan.plans] == list(programs.PROGRAMS)
    for p in tiny_plan.plans:
        assert p.fits and p.memory is not None, p.program.name
        assert 0 < p.memory.total < tiny_plan.topology.chip.hbm_bytes
        assert p.flops > 0 and p.bytes_accessed > 0 and p.estimate.step_s > 0
        assert 0 < p.estimate.mfu <= 1
        assert p.compile_seconds > 0
    train = tiny_plan.plans[0]
    assert train.program.mesh == {"data": 2, "fsdp": 2} and train.program.global_batch == 4
    assert train.memory.aliased > 0  # the donated state is updated in place
    kinds = {c.kind for c in train.collectives}
    assert "all-gather" in kinds  # parameters gathered from their fsdp shards
    assert kinds & {"all-reduce", "reduce-scatter"}  # gradients summed over the batch


def test_loops_are_flagged(tiny_plan):
    """XLA's cost analysis counts a loop body once: plans say which programs loop."""
    loops = {p.program.name: p.loops for p in tiny_plan.plans}
    assert loops["finetune"] > 0  # the reward's DP
    assert loops["train"] == 0  # the tiny step has no loop (no accumulation, no scan)
    assert "lower bounds" in report.markdown(tiny_plan)


def test_no_cpu_only_custom_call_on_tpu(tiny_plan):
    for p in tiny_plan.plans:
        assert p.cpu_only_calls == (), p.program.name


def test_the_check_finds_the_native_kernel_in_a_cpu_step():
    """Positive control: the same fine-tuning step built for one CPU device does contain the
    native ScanMatch custom call, and the check names it."""
    from ctsearcher_jax.metrics.scanmatch import native as scanmatch_native

    if not scanmatch_native.available():
        pytest.skip("no C++ compiler: the native kernel is not built")
    config = config_lib.load("tiny")
    program = programs.build("finetune", config, jax.local_devices()[:1], 1)
    calls = hlo.cpu_only_calls(hlo.custom_call_targets(lower(program).as_text()))
    assert calls and all(c.startswith("ctsearcher_scanmatch") for c in calls)


def test_report(tiny_plan):
    text = report.markdown(tiny_plan)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 5 and all("| fits |" in r for r in rows[1:])  # header + 4 programs
    assert "not measurements on a card" in text
    assert "windows/s/chip" in text and "1045 CTs" in text
    data = report.to_dict(tiny_plan)
    json.dumps(data)
    assert [p["program"] for p in data["programs"]] == list(programs.PROGRAMS)


def test_command_json(capsys):
    rc = cli.main(["plan", "--topology", "v5e:2x2", "--config", "tiny", "--program", "predict",
                   "--chip-batch", "1", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    (predict,) = data["programs"]
    assert predict["fits"] and predict["global_batch"] == 4 and predict["mesh"] == {"data": 4}
