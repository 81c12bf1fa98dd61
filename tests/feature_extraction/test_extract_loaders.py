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
