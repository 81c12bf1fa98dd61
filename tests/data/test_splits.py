"""The validation split: carved from the training CTs by CT, seeded, a pure function of the names."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ctsearcher_jax.config import DataConfig
from ctsearcher_jax.data.schema import CTItem, Scanpath
from ctsearcher_jax.data.splits import carve_validation, split_items, validation_count
from ctsearcher_jax.errors import ConfigError, DataError


def ct(name: str, split: str, readers: int = 2) -> CTItem:
    sps = tuple(Scanpath(name=name, subject=r + 1, split=split, x=np.ones(1), y=np.ones(1), z=np.ones(1), t=np.full(1, 0.2))
                for r in range(readers))
    return CTItem(name=name, split=split, readers=sps)


ITEMS = [ct(f"ct_{i:03d}", "train") for i in range(20)] + [ct(f"t_{i}", "test") for i in range(5)]


def test_carve_is_a_pure_function_of_names_and_seed():
    train = ITEMS[:20]
    rest, val = carve_validation(train, 0.1, seed=0)
    assert len(val) == 2 and len(rest) == 18
    assert {it.name for it in rest}.isdisjoint({it.name for it in val})
    assert [it.name for it in rest] == sorted(it.name for it in rest)  # dataset order kept
    shuffled = random.Random(1).sample(train, len(train))
    assert {it.name for it in carve_validation(shuffled, 0.1, seed=0)[1]} == {it.name for it in val}
    others = {frozenset(it.name for it in carve_validation(train, 0.1, seed=s)[1]) for s in range(6)}
    assert len(others) > 1  # the seed chooses
    # a CT added to the dataset moves at most one CT across
    bigger = carve_validation([*train, ct("ct_new", "train")], 0.1, seed=0)[1]
    assert len({it.name for it in val} - {it.name for it in bigger}) <= 1
    # by CT: every reader of a validation CT is in the validation split
    assert all(len(it.readers) == 2 for it in val)


@pytest.mark.parametrize("n, fraction, want", [(2, 0.1, 1), (10, 0.1, 1), (20, 0.1, 2),
                                               (10, 0.99, 9), (10, 0.0, 0), (5, 0.3, 2)])
def test_validation_count_is_at_least_one_and_never_all(n, fraction, want):
    assert validation_count(n, fraction) == want


def test_split_items_for_each_eval_split():
    s = split_items(ITEMS, DataConfig())  # the default: validation carved from train
    assert (s.eval_split, s.eval_source) == ("validation", "carved")
    assert (len(s.train), len(s.evaluation), len(s.test)) == (18, 2, 5)
    assert not s.selects_on_test
    record = s.record()
    assert record["sizes"]["evaluation"] == {"cts": 2, "scanpaths": 4}
    assert record["evaluation_cts"] == [it.name for it in s.evaluation]

    paper = split_items(ITEMS, DataConfig(eval_split="test"))
    assert paper.selects_on_test and len(paper.train) == 20 and paper.evaluation == paper.test

    own = split_items([*ITEMS, ct("v_0", "valid")], DataConfig())  # the dataset's own split wins
    assert own.eval_source == "dataset" and [it.name for it in own.evaluation] == ["v_0"]
    assert len(own.train) == 20

    none = split_items(ITEMS, DataConfig(eval_split="none"))
    assert none.evaluation == () and none.eval_source == "none"
    off = split_items(ITEMS, DataConfig(validation_fraction=0.0))
    assert off.evaluation == () and len(off.train) == 20


def test_split_errors():
    with pytest.raises(DataError, match="too few to carve"):
        split_items([ct("a", "train"), ct("b", "test")], DataConfig())
    with pytest.raises(DataError, match="no CT in the training split"):
        split_items([ct("b", "test")], DataConfig())
    with pytest.raises(ConfigError, match="is the training split"):
        split_items(ITEMS, DataConfig(eval_split="train"))
    with pytest.raises(ConfigError, match="validation_fraction"):
        DataConfig(validation_fraction=1.0)
