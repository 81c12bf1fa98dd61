"""How `make test` shares the suite between its pytest-xdist workers (`--dist loadscope`).

A work unit is a test module, or a group of modules that share a session fixture too costly to
build twice (SHARED_SCOPES: the group runs on one worker). Workers take the costliest unit left
first (longest-processing-time order), so a run ends with small modules on both cores; xdist's
own order (most tests first) sent the one-test end-to-end modules (demo, accelerator bench) last
and left one worker idle for the final 28 s of a 502 s run.
"""

from __future__ import annotations

from collections import OrderedDict

# Modules that share a session fixture: the training baseline run of tests/train/conftest.py.
SHARED_SCOPES = {"tests/train/test_scale.py": "train baseline",
                 "tests/train/test_resume.py": "train baseline"}

# Seconds of each costly unit in `make test` (mean of two fresh-clone runs on the 2-core CI
# machine, 2026-12-07, from pytest's junit times). Only the order matters: a stale or missing
# entry costs balance, never a result. Units not listed count UNLISTED_SECONDS per test.
UNIT_SECONDS = {
    "train baseline": 150, "tests/planning/test_plan_tpu.py": 79,
    "tests/train/test_ct_searcher_ar_run.py": 78, "tests/feature_extraction/test_swin_parity.py": 71,
    "tests/model/test_ct_searcher_ar.py": 54, "tests/train/test_reader_conditioning.py": 47,
    "tests/test_bench_accelerator.py": 40, "tests/test_hostile_volumes.py": 34,
    "tests/feature_extraction/test_extract_parity.py": 32, "tests/train/test_step.py": 29,
    "tests/test_hostile_text.py": 28, "tests/metrics/test_scanpath_metrics.py": 27,
    "tests/test_demo.py": 27, "tests/metrics/test_scanmatch_reward.py": 25,
    "tests/test_predict.py": 25, "tests/train/test_train_cli.py": 21,
    "tests/feature_extraction/test_swin_legacy_golden.py": 21,
    "tests/model/test_import_serialization.py": 20, "tests/train/test_validation_split.py": 16,
    "tests/test_readme.py": 14, "tests/planning/test_plan_cuda.py": 12,
    "tests/model/test_model.py": 11, "tests/model/test_losses.py": 11,
}
UNLISTED_SECONDS = 0.1


def shared_scope(module: str) -> str:
    """The work unit of a test module (its path relative to the repository)."""
    return SHARED_SCOPES.get(module, module)


def unit_seconds(unit: str, tests: int) -> float:
    """The expected seconds of a work unit of `tests` tests."""
    return UNIT_SECONDS.get(unit, UNLISTED_SECONDS * tests)


def costliest_first(queue: OrderedDict[str, dict]) -> None:
    """Move the costliest unit of xdist's queue ({unit: {nodeid: done}}) to its front."""
    if queue:
        unit = max(queue, key=lambda u: unit_seconds(u, len(queue[u])))
        queue.move_to_end(unit, last=False)
