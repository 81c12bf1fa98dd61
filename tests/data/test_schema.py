"""Record validation: each rule fails with a message naming file, record, CT and field."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctsearcher_jax.data import schema
from ctsearcher_jax.errors import DataError

GOOD = {"name": "ct_a", "subject": 1, "task": "read", "X": [1.0, 256.5, 512.0],
        "Y": [10.0, 20.0, 30.0], "Z": [1.0, 2.0, 3.0], "T": [0.2, 0.3, 0.25], "length": 3,
        "split": "train", "report": "normal"}


def write(tmp_path, records, name="data_simplified_split_matched_pt.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def broken(**changes):
    rec = copy.deepcopy(GOOD)
    for k, v in changes.items():
        if v is KeyError:
            del rec[k]
        else:
            rec[k] = v
    return rec


def test_good_records_load_and_group(tmp_path):
    other = broken(subject=2, X=[5.0], Y=[5.0], Z=[5.0], T=[1.0], length=1)
    third = broken(name="ct_b", split="test")
    path = write(tmp_path, [GOOD, other, third])
    items = schema.load_dataset(tmp_path)
    assert [it.name for it in items] == ["ct_a", "ct_b"]
    assert [r.subject for r in items[0].readers] == [1, 2]
    assert items[0].readers[0].as_array().shape == (3, 4)
    assert schema.load_dataset(path, split="test")[0].name == "ct_b"
    assert items[0].readers[0].to_record() == GOOD


CASES = [
    (dict(name=KeyError), "'name'"),
    (dict(name=""), "'name'"),
    (dict(subject=KeyError), "'subject'"),
    (dict(subject=[1]), "'subject'"),
    (dict(split="training"), "'split'"),
    (dict(split=KeyError), "'split'"),
    (dict(X=KeyError), "'X'"),
    (dict(Y="1,2,3"), "'Y'"),
    (dict(Z=[]), "'Z'"),
    (dict(T=[0.2, "a", 0.1]), "'T'"),
    (dict(X=[1.0, None, 3.0]), "'X'"),
    (dict(X=[1.0, 2.0]), "different lengths"),
    (dict(length=4), "'length'"),
    (dict(length="3"), "'length'"),
    (dict(length=KeyError), "'length'"),
    (dict(T=[0.2, 0.0, 0.1]), "'T' must be > 0"),
    (dict(T=[0.2, -1.0, 0.1]), "'T' must be > 0"),
    (dict(X=[0.5, 2.0, 3.0]), "'X' outside the frame"),
    (dict(Y=[1.0, 513.0, 3.0]), "'Y' outside the frame"),
    (dict(Z=[1.0, 600.0, 3.0]), "'Z' outside the frame"),
    (dict(task=3), "'task'"),
    (dict(report=["x"]), "'report'"),
]


@pytest.mark.parametrize("changes, field", CASES)
def test_each_rule_names_record_and_field(tmp_path, changes, field):
    path = write(tmp_path, [GOOD, broken(subject=2), broken(**{"subject": 3, **changes})])
    with pytest.raises(DataError) as info:
        schema.load_records(path)
    msg = str(info.value)
    assert str(path) in msg and "record 2" in msg and field in msg
    if changes.get("name", None) not in (KeyError, ""):
        assert "CT 'ct_a'" in msg


def test_non_finite_numbers(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([broken(X=[1.0, math.nan, 2.0])]))  # json.dumps writes NaN
    with pytest.raises(DataError, match=r"record 0.*'X'.*non-finite"):
        schema.load_records(path)


def test_duplicate_reader_and_split_leak(tmp_path):
    with pytest.raises(DataError, match=r"record 1.*'subject' 1 repeats record 0"):
        schema.load_records(write(tmp_path, [GOOD, GOOD]))
    with pytest.raises(DataError, match=r"data_simplified_split_matched_pt.json: CT 'ct_a'.*"
                                        r"different splits"):
        schema.load_dataset(write(tmp_path, [GOOD, broken(subject=2, split="test")]))


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no data_simplified"):
        schema.load_records(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        schema.load_records(tmp_path / "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON \(line 1"):
        schema.load_records(bad)
    bad.write_text('{"name": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        schema.load_records(bad)
    bad.write_text("[]")
    with pytest.raises(DataError, match="no records"):
        schema.load_records(bad)
    bad.write_bytes(b"\xff\xfe\x00[")
    with pytest.raises(DataError, match="UTF-8"):
        schema.load_records(bad)


def test_predictions_do_not_need_split(tmp_path):
    pred = {k: v for k, v in GOOD.items() if k not in ("split", "task", "report")}
    sps = schema.load_records(write(tmp_path, [pred], "p.json"), require_split=False)
    assert sps[0].split is None and sps[0].length == 3


def test_collect_reports_every_problem():
    recs = [broken(T=[0.2, 0.0, 0.1]), "oops", broken(subject=9, split="x", X=[0.0, 1.0, 1.0])]
    good, problems = schema.parse_records(recs, "f.json", collect=True)
    assert good == []
    assert len(problems) == 4
    assert any("record 1" in p and "JSON object" in p for p in problems)


def test_z_limit_from_volume():
    rec = broken(Z=[1.0, 2.0, 40.0])
    _, problems = schema.parse_records([rec], "f", z_limits={"ct_a": 30}, collect=True)
    assert problems and "[1, 30]" in problems[0]


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 600),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                         st.dictionaries(st.text(max_size=4), c,
                                                                         max_size=4)),
                          max_leaves=12)
record_like = st.fixed_dictionaries(
    {}, optional={"name": st.one_of(st.text(max_size=4), json_value),
                  "subject": json_value, "split": st.sampled_from(["train", "test", "x", 3]),
                  "X": st.lists(json_leaf, max_size=4), "Y": st.lists(json_leaf, max_size=4),
                  "Z": st.lists(json_leaf, max_size=4), "T": st.lists(json_leaf, max_size=4),
                  "length": json_value, "task": json_value, "report": json_value})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(record_like, json_value), max_size=5))
def test_random_records_only_raise_data_error(records):
    try:
        scanpaths = schema.group_by_ct(schema.parse_records(records, "fuzz.json")[0])
    except DataError:
        return
    for item in scanpaths:
        for sp in item.readers:
            assert sp.length >= 1 and (sp.t > 0).all()
