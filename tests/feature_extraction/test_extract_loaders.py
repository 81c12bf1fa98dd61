"""The extraction input pipeline: loader threads, the writer thread, device-wait reporting."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import fake_extractor, write_ct  # noqa: E402

from ctsearcher_jax.config import ExtractConfig  # noqa: E402
from feature_extraction import extract as ex  # noqa: E402
from feature_extraction.directory import extract_directory  # noqa: E402


@pytest.fixture(scope="module")
def extractor():
    return fake_extractor(ExtractConfig(feature_size=12, batch=2))


def test_loader_workers_change_nothing_in_the_outputs(tmp_path, extractor):
    for k, shape in enumerate([(100, 97, 60), (96, 96, 40), (130, 100, 70), (97, 96, 33)]):
        write_ct(tmp_path / "cts" / f"ct{k}.nii.gz", shape, seed=k)
    (tmp_path / "cts" / "broken.nii.gz").write_bytes(b"not a nifti")
    runs = {}
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        s = extract_directory(tmp_path / "cts", out, extractor=extractor, progress=False,
                                 echo=lambda m: None, workers=workers)
        assert s.processed == ["ct0", "ct1", "ct2", "ct3"] and s.workers == workers
        assert [Path(f).name for f, _ in s.failed] == ["broken.nii.gz"]
        assert [t.name for t in s.timings] == s.processed
        assert sum(t.windows for t in s.timings) == s.windows
        runs[workers] = {p.name: p.read_bytes() for p in out.glob("*.npy")}
        assert not list(out.glob(".*"))  # no staged leftovers
        d = json.loads(json.dumps(s.to_dict()))
        assert 0.0 <= d["device_wait_fraction"] <= 1.0 and len(d["volumes"]) == 4
    assert runs[1] == runs[3] and len(runs[1]) == 8  # byte-identical arrays


def test_a_slow_decoder_is_reported_as_decode_bound(tmp_path, extractor, monkeypatch):
    for k in range(3):
        write_ct(tmp_path / "cts" / f"ct{k}.nii.gz", (96, 96, 40), seed=k)
    real = ex.load_volume

    def slow(*a, **kw):
        time.sleep(0.6)  # far slower than the stand-in encoder
        return real(*a, **kw)

    monkeypatch.setattr(ex, "load_volume", slow)
    s = extract_directory(tmp_path / "cts", tmp_path / "out", extractor=extractor,
                             progress=False, echo=lambda m: None, workers=1)
    assert s.ok and s.input_wait_seconds > 0 and s.first_input_seconds > 0
    assert s.decode_bound and any(line.startswith("decode-bound") for line in s.lines())
    assert all(t.device_wait_fraction > 0 for t in s.timings[1:])
    volumes = json.loads((tmp_path / "out" / "manifest.json").read_text())["volumes"]
    assert volumes["ct2"]["timing"]["input_wait_seconds"] > 0
    assert set(volumes["ct2"]["timing"]) == {"encode_seconds", "input_wait_seconds"}


def test_writer_failure_is_reported_and_nothing_partial_is_left(tmp_path, extractor, monkeypatch):
    for k in range(2):
        write_ct(tmp_path / "cts" / f"ct{k}.nii.gz", (96, 96, 40), seed=k)
    real = ex.merge_windows
    calls = []

    def bad_first(cells, *a, **kw):
        calls.append(1)
        out = real(cells, *a, **kw)
        return out * np.nan if len(calls) <= 2 else out  # ct0's two arrays: NaN features

    monkeypatch.setattr(ex, "merge_windows", bad_first)
    s = extract_directory(tmp_path / "cts", tmp_path / "out", extractor=extractor,
                             progress=False, echo=lambda m: None, workers=2)
    assert s.processed == ["ct1"] and [Path(f).name for f, _ in s.failed] == ["ct0.nii.gz"]
    assert "NaN" in s.failed[0][1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ct1.npy", "ct1_hidden_states_out_4.npy", "manifest.json"]


# ----------------------------------------------------------------------------- memory budget

def test_loaders_hold_at_most_the_memory_budget(tmp_path):
    """Issue 24.1: the decoded volumes in flight fit the budget (the peak is in the summary); a
    volume larger than the whole budget is refused, named, and the others go on; the outputs are
    those of an unbounded run."""
    from ctsearcher_jax.data.nifti import open_nifti

    for k in range(4):
        write_ct(tmp_path / "cts" / f"ct{k}.nii.gz", (96, 96, 40), seed=k)
    write_ct(tmp_path / "cts" / "ct9_big.nii.gz", (130, 100, 70), seed=9)
    one = open_nifti(tmp_path / "cts" / "ct0.nii.gz").decoded_bytes()
    big = open_nifti(tmp_path / "cts" / "ct9_big.nii.gz").decoded_bytes()
    budget_gb = 1.5 * one / 1e9  # room for one decoded volume at a time, not for the big one
    assert big > budget_gb * 1e9
    arrays = {}
    for label, gb in (("bounded", budget_gb), ("free", None)):
        ext = fake_extractor(ExtractConfig(feature_size=12, batch=2, memory_budget_gb=gb))
        out = tmp_path / label
        s = extract_directory(tmp_path / "cts", out, extractor=ext, progress=False,
                              echo=lambda m: None, workers=3)
        arrays[label] = {p.name: p.read_bytes() for p in out.glob("ct[0-3]*.npy")}
        if label == "bounded":
            assert s.processed == ["ct0", "ct1", "ct2", "ct3"]
            (file, message), = s.failed
            assert file.endswith("ct9_big.nii.gz") and message.startswith(file)
            assert "more than the loaders' memory budget" in message and "--memory-budget" in message
            assert s.memory_peak_bytes == one and s.memory_budget_bytes == int(budget_gb * 1e9)
            assert any(line.startswith("memory: at most") for line in s.lines())
            assert s.to_dict()["memory_peak_bytes"] == one
        else:
            assert s.ok and s.memory_peak_bytes >= 2 * one  # three loaders fill more than one
    assert arrays["bounded"] == arrays["free"] and len(arrays["free"]) == 8


def test_the_budget_grants_in_file_order_and_close_wakes_the_waiters():
    import threading

    from ctsearcher_jax.errors import DataError
    from feature_extraction.memory_budget import BudgetClosed, MemoryBudget

    budget = MemoryBudget(100)
    order, errors = [], []

    def take(i, n):
        try:
            budget.reserve(i, n, f"v{i}")
            order.append(i)
        except (BudgetClosed, DataError) as exc:
            errors.append((i, type(exc).__name__))

    later = threading.Thread(target=take, args=(2, 60))
    later.start()
    later.join(0.2)
    assert later.is_alive() and not order  # volume 2 waits for 0 and 1 even with room free
    budget.skip(1)
    take(0, 50)  # volume 0 reserves; 2 now has its turn but 50 + 60 > 100: it waits for room
    later.join(0.2)
    assert order == [0] and later.is_alive()
    budget.release(50)
    later.join(5)
    assert order == [0, 2] and budget.in_flight == 60 and budget.peak == 60
    take(3, 101)  # larger than the whole budget: refused, and the turn passes
    assert errors == [(3, "DataError")]
    waiting = threading.Thread(target=take, args=(4, 50))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()
    budget.close()
    waiting.join(5)
    assert errors[-1] == (4, "BudgetClosed")
