"""The order in which `make test`'s xdist workers take the suite (tests/xdist_order.py)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import xdist_order  # tests/ is on the path (pyproject: pythonpath)

HERE = Path(__file__).resolve().parent


def test_every_costed_unit_is_a_test_module_or_a_shared_group():
    """A renamed module would silently fall back to its test count: its entry must follow it."""
    groups = set(xdist_order.SHARED_SCOPES.values())
    for unit in xdist_order.UNIT_SECONDS:
        assert unit in groups or (HERE.parent / unit).is_file(), unit
    for module in xdist_order.SHARED_SCOPES:
        assert (HERE.parent / module).is_file(), module


def test_the_costliest_unit_left_goes_first():
    queue = OrderedDict([
        ("tests/test_config.py", dict.fromkeys(range(35), False)),   # many quick tests
        ("tests/test_demo.py", {"tests/test_demo.py::test_demo_pipeline_small": False}),
        ("train baseline", dict.fromkeys(range(8), False)),
        ("tests/test_unlisted.py", dict.fromkeys(range(2), False)),
    ])
    order = []
    while queue:
        xdist_order.costliest_first(queue)
        order.append(queue.popitem(last=False)[0])
    assert order == ["train baseline", "tests/test_demo.py", "tests/test_config.py",
                     "tests/test_unlisted.py"]
    xdist_order.costliest_first(queue)  # an empty queue is left alone


def test_modules_sharing_the_training_baseline_are_one_unit():
    assert xdist_order.shared_scope("tests/train/test_scale.py") == "train baseline"
    assert xdist_order.shared_scope("tests/train/test_resume.py") == "train baseline"
    assert xdist_order.shared_scope("tests/test_demo.py") == "tests/test_demo.py"
