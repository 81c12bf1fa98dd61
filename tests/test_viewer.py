"""The interactive HTML viewer: encoding, positions, bad input, and the page in a real browser.

The browser tests drive Debian's headless Chromium through Selenium with the system chromedriver
(no Selenium Manager, no network). Without Chromium they skip with the reason, except under CI
(the environment variable CI set), where a missing browser fails them: `.ci/run` installs it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctsearcher_jax.cli import main
from ctsearcher_jax.data.schema import Scanpath, load_dataset
from ctsearcher_jax.data.synthetic import synthesize
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.viz.scanpaths import fixation_onsets
from ctsearcher_jax.viz.viewer import (
    ViewerPath,
    build_viewer_html,
    decode_slice,
    display_shape,
    encode_slices,
    quantisation,
    viewer_payload,
)
from ctsearcher_jax.viz.volume import CTVolume, gaze_to_voxel, load_volume

SHAPE = (40, 40, 24)
CHROMEDRIVER = "/usr/bin/chromedriver"


def sp(x, y, z, t, subject=1, name="ct") -> Scanpath:
    f = lambda v: np.asarray(v, np.float64)  # noqa: E731
    return Scanpath(name=name, subject=subject, split=None, x=f(x), y=f(y), z=f(z), t=f(t))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_cts=1, num_readers=2, seed=5, shape=SHAPE, min_fixations=8,
               max_fixations=16)
    return out


@pytest.fixture(scope="module")
def viewer_file(dataset, tmp_path_factory) -> Path:
    """A viewer written by the command: both readers, reader 1's path also as a 'prediction'."""
    item = load_dataset(dataset)[0]
    pred = []
    for r in item.readers[:1]:
        rec = r.to_record()
        for key in ("split", "task", "report"):
            rec.pop(key, None)
        rec["X"] = [min(512.0, v + 30.0) for v in rec["X"]]
        # Fractional slices: Z rounds (half up) to the slice a fixation is drawn on.
        rec["Z"] = [float(np.clip(v + (0.4, -0.4, 0.5)[n % 3], 1, SHAPE[2]))
                    for n, v in enumerate(rec["Z"])]
        pred.append(rec)
    out = tmp_path_factory.mktemp("viewer")
    (out / "pred.json").write_text(json.dumps(pred))
    assert main(["view", "--data", str(dataset), "--name", item.name, "--pred",
                 str(out / "pred.json"), "--out", str(out / "v.html")]) == 0
    return out / "v.html"


def embedded(path: Path) -> dict:
    text = path.read_text()
    start = text.index('<script type="application/json" id="viewer-data">') + len(
        '<script type="application/json" id="viewer-data">')
    return json.loads(text[start:text.index("</script>", start)])


# ------------------------------------------------------------------ Python side (no browser)

def test_encoding_keeps_the_values_to_the_quantisation_step():
    rng = np.random.default_rng(0)
    data = rng.uniform(-1100, 3200, size=(30, 20, 3)).astype(np.float32)
    enc = encode_slices(data, max_side=256)
    assert (enc["offset"], enc["step"]) == (-1024.0, 1.0)
    for k in range(3):
        np.testing.assert_allclose(decode_slice(enc, k), np.clip(data[:, :, k], -1024, 3071),
                                   atol=0.5 + 1e-3)
    # Downsampled: the longer axis to max_side, a box filter (the mean of 2 x 2 blocks here).
    data = rng.uniform(-200, 200, size=(64, 32, 1)).astype(np.float32)
    enc = encode_slices(data, max_side=32)
    assert (enc["height"], enc["width"]) == display_shape(data.shape, 32) == (32, 16)
    boxed = data[:, :, 0].reshape(32, 2, 16, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(decode_slice(enc, 0), boxed, atol=0.5 + 1e-3)
    # Not HU (a volume in [0, 1]): 4096 levels over its range instead of 1 HU steps.
    offset, step, levels = quantisation(np.linspace(0, 1, 100))
    assert (offset, levels) == (0.0, 4096) and step == pytest.approx(1 / 4095)


def test_page_positions_are_those_of_gaze_to_voxel(viewer_file, dataset):
    data = embedded(viewer_file)
    item = load_dataset(dataset)[0]
    shape = load_volume(dataset / "cts" / f"{item.name}.nii.gz").shape
    assert data["shape"] == list(shape)
    for p, s in zip(data["paths"], list(item.readers)):
        i, j, k = gaze_to_voxel(s.x, s.y, s.z, shape)
        assert p["i"] == i.tolist() and p["j"] == j.tolist() and p["k"] == k.tolist()
        assert p["slice"] == (np.floor(s.z - 0.5)).astype(int).tolist()  # Z rounded, 0-based
        assert p["onset"] == fixation_onsets(s.t).tolist()
    assert [p["kind"] for p in data["paths"]] == ["gt", "gt", "pred"]
    assert data["sources"]["predictions"].endswith("pred.json")


def test_hu_step_outside_what_16_bits_hold_is_refused(dataset, tmp_path, capsys):
    """Issue 24 row 11: `--hu-step 0.001` (1819001 levels) was a traceback."""
    item = load_dataset(dataset)[0]
    for step in ("0.001", "0", "-1", "nan", "inf", "5000"):
        assert main(["view", "--data", str(dataset), "--name", item.name, "--hu-step", step,
                     "--out", str(tmp_path / "v.html")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--hu-step" in err and "[0.0625, 4095] HU" in err, err
    assert not (tmp_path / "v.html").exists()
    assert main(["view", "--data", str(dataset), "--name", item.name, "--hu-step", "0.0625",
                 "--out", str(tmp_path / "v.html")]) == 0


def test_bad_input_is_one_line_and_writes_nothing(dataset, tmp_path, capsys):
    item = load_dataset(dataset)[0]
    out = tmp_path / "v.html"
    out.write_text("earlier")
    assert main(["view", "--data", str(dataset), "--name", "no_such_ct", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'no_such_ct'" in err and item.name in err

    bad = item.readers[0].to_record()
    bad["Z"][2] = SHAPE[2] + 3.0
    pred = tmp_path / "pred.json"
    for rec in (bad,):
        rec.pop("split")
    pred.write_text(json.dumps([bad]))
    assert main(["view", "--data", str(dataset), "--name", item.name, "--pred", str(pred),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(pred) in err and "record 0" in err
    assert f"fixation 3 has Z = {SHAPE[2] + 3:g}" in err and f"{SHAPE[2]} slices" in err
    assert out.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] != []
    assert not list(tmp_path.glob(".v.html*"))               # no temporary file left

    volume = CTVolume(np.zeros(SHAPE, np.float32), (1.0, 1.0, 1.0), Path("x.nii.gz"))
    empty = sp([], [], [], [])
    with pytest.raises(DataError, match="empty scanpath"):
        build_viewer_html(volume, [ViewerPath("reader 1", "gt", empty, "d.json")], name="ct")
    with pytest.raises(DataError, match="nothing to show"):
        build_viewer_html(volume, [], name="ct")
    with pytest.raises(DataError, match=r"d\.json: CT 'ct', subject 1 .*fixation 2 has X = 600"):
        build_viewer_html(volume, [ViewerPath("reader 1", "gt", sp([5, 600], [5, 5], [1, 1],
                                                                    [.2, .2]), "d.json")], name="ct")
    # predict's viewers accept Z beyond a short volume (z_extent 512) and draw it on the last slice.
    far = sp([5, 6], [5, 5], [1, 300], [.2, .2])
    payload = viewer_payload(volume, [ViewerPath("p", "pred", far)], name="ct", clip_z=True)
    assert payload["paths"][0]["slice"] == [0, SHAPE[2] - 1]
    assert payload["paths"][0]["outside"] == [False, True]


# ------------------------------------------------------------------ the page in Chromium

@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or not os.path.exists(CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI is set but Chromium or chromedriver is missing: .ci/run installs "
                        "them with `apt-get install chromium chromium-driver`")
        pytest.skip("Chromium and chromedriver not installed (apt-get install chromium "
                    "chromium-driver); the viewer's browser tests need them")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI is set but selenium is missing: it is in the test extra")
        pytest.skip("selenium not installed (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="viewer-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, script: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


@pytest.fixture(scope="module")
def page(browser, viewer_file):
    browser.get(viewer_file.as_uri())
    assert wait_for(browser, "return window.viewerState && window.viewerState.projectionsReady")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    return browser


def state(driver) -> dict:
    return driver.execute_script(
        "const s = window.viewerState; return {slice: s.slice, time: s.time, playing: s.playing, "
        "drawn: s.drawn, markers: s.markers, rendered: s.renderedSlice, window: s.window, "
        "canvas: s.canvasSize};")


def set_range(driver, element_id: str, value: float) -> None:
    """What dragging a slider does: a new value and an `input` event."""
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = "
                          "String(arguments[1]); e.dispatchEvent(new Event('input'));",
                          element_id, value)


def canvas_digest(driver) -> str:
    return driver.execute_script(
        "const c = document.getElementById('axial'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let h = 0; for (let n = 0; n < d.length; "
        "n++) h = (h * 31 + d[n]) | 0; return String(h);")


def test_page_names_what_it_shows(page, viewer_file, dataset):
    item = load_dataset(dataset)[0]
    header = page.find_element("id", "meta").text
    assert item.name in page.find_element("id", "title").text
    assert "readers: 1, 2" in header and "pred.json" in header
    assert "data_simplified_split_matched_pt.json" in header and f"{item.name}.nii.gz" in header
    assert "quantised in steps of 1" in header


def test_time_of_fixation_k_moves_the_slider_to_its_slice(page, viewer_file):
    data = embedded(viewer_file)
    follow = data["paths"][0]                      # the viewer follows the first reader
    on_slice = {}
    for pi, p in enumerate(data["paths"]):
        for f, z in enumerate(p["z"]):
            on_slice.setdefault(int(np.floor(z + 0.5)) - 1, set()).add((pi, f))
    for k in range(len(follow["onset"])):
        set_range(page, "time-slider", follow["onset"][k])
        s = state(page)
        target = follow["slice"][k]
        assert s["time"] == follow["onset"][k] and s["slice"] == target == s["rendered"]
        slider = page.find_element("id", "slice-slider").get_attribute("value")
        assert int(slider) == target + 1
        # The fixations drawn on the slice are exactly those whose Z rounds to it ...
        assert {tuple(d) for d in s["drawn"]} == on_slice[target]
        # ... at the pixel the figures use for voxel (i, j).
        width, height = s["canvas"]
        for m in s["markers"]:
            p = data["paths"][m["path"]]
            f = m["fixation"]
            assert m["x"] == pytest.approx((p["j"][f] + 0.5) * width / data["shape"][1], abs=1e-9)
            assert m["y"] == pytest.approx((p["i"][f] + 0.5) * height / data["shape"][0], abs=1e-9)


def test_page_uses_the_positions_of_gaze_to_voxel(page, dataset):
    item = load_dataset(dataset)[0]
    shape = tuple(page.execute_script("return window.viewerState.shape"))
    shown = page.execute_script("return window.viewerState.paths")
    for p, s in zip(shown, item.readers):
        i, j, k = gaze_to_voxel(s.x, s.y, s.z, shape)
        assert p["i"] == i.tolist() and p["j"] == j.tolist() and p["k"] == k.tolist()


def test_clicking_the_drilling_plot_jumps_in_time(page):
    from selenium.webdriver.common.action_chains import ActionChains

    drilling = page.find_element("id", "drilling")
    duration = page.execute_script("return window.viewerState.duration")
    set_range(page, "time-slider", 0)
    # Three quarters along the plot's time axis (plot margins: 44 px left, 10 px right).
    width = drilling.size["width"]
    scale = width / page.execute_script("return document.getElementById('drilling').width")
    x = (44 + 0.75 * (page.execute_script("return document.getElementById('drilling').width")
                      - 54)) * scale
    ActionChains(page).move_to_element_with_offset(drilling, x - width / 2, 0).click().perform()
    assert state(page)["time"] == pytest.approx(0.75 * duration, abs=0.02 * duration)


def test_play_advances_time_and_follows_the_reader(page, viewer_file):
    from selenium.webdriver.support.ui import Select

    follow = embedded(viewer_file)["paths"][0]
    set_range(page, "time-slider", 0)
    select = Select(page.find_element("id", "speed"))
    select.select_by_value("8")
    assert page.execute_script("return window.viewerState.speed") == 8
    select.select_by_value("0.25")          # slow enough that the reading cannot end meanwhile
    page.find_element("id", "play").click()
    assert state(page)["playing"]
    assert wait_for(page, "return window.viewerState.time > 0.05", timeout=5)
    page.find_element("id", "play").click()
    s = state(page)
    assert not s["playing"] and 0.05 < s["time"] < follow["onset"][-1]
    current = int(np.searchsorted(follow["onset"], s["time"], side="right")) - 1
    assert s["slice"] == follow["slice"][current]
    time.sleep(0.1)
    assert state(page)["time"] == s["time"]        # paused stays put


def test_keyboard_steps_slices_and_fixations(page):
    from selenium.webdriver.common.keys import Keys

    set_range(page, "slice-slider", 5)
    page.find_element("id", "axial").click()
    body = page.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_DOWN)
    assert state(page)["slice"] == 5
    body.send_keys(Keys.PAGE_UP)
    assert state(page)["slice"] == 0
    body.send_keys(Keys.HOME)
    body.send_keys(Keys.ARROW_RIGHT)                # next fixation of the followed reader
    assert state(page)["time"] > 0


def test_window_switch_changes_the_pixels(page):
    from selenium.webdriver.support.ui import Select

    set_range(page, "slice-slider", SHAPE[2] // 2)
    select = Select(page.find_element("id", "window-select"))
    select.select_by_value("soft")
    soft = canvas_digest(page)
    select.select_by_value("lung")
    assert state(page)["window"] == {"name": "lung", "width": 1500, "level": -600}
    lung = canvas_digest(page)
    select.select_by_value("bone")
    bone = canvas_digest(page)
    wl = page.find_element("id", "window-wl")
    wl.clear()
    wl.send_keys("80,40\n")
    page.execute_script("document.getElementById('window-wl').dispatchEvent(new Event('change'))")
    assert state(page)["window"] == {"name": "custom", "width": 80, "level": 40}
    custom = canvas_digest(page)
    assert len({soft, lung, bone, custom}) == 4
    select.select_by_value("soft")
    assert canvas_digest(page) == soft


def test_screenshots_are_not_blank_and_differ_between_slices(page):
    def shot(slice_number: int) -> np.ndarray:
        set_range(page, "slice-slider", slice_number)
        assert state(page)["rendered"] == slice_number - 1
        png = page.find_element("id", "axial").screenshot_as_png
        return np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float64)

    a, b = shot(SHAPE[2] // 3), shot(2 * SHAPE[2] // 3)
    assert a.std() > 10 and b.std() > 10
    assert np.abs(a - b).mean() > 1.0


def test_the_page_fits_1280_pixels_without_cutting(browser, dataset, tmp_path):
    """At 1280 px the metrics table fits its panel (no scroll, nothing past the window) and the
    drilling plot's last time label ends inside its canvas."""
    item = load_dataset(dataset)[0]
    pred = [dict(r.to_record(), split=None) for r in item.readers]
    for rec in pred:
        for key in ("split", "task", "report"):
            rec.pop(key, None)
    (tmp_path / "p.json").write_text(json.dumps(pred))
    out = tmp_path / "wide.html"
    assert main(["view", "--data", str(dataset), "--name", item.name, "--pred",
                 str(tmp_path / "p.json"), "--score", "--out", str(out)]) == 0
    size = browser.get_window_size()
    try:
        browser.set_window_size(1280, 1000)
        browser.get(out.as_uri())
        assert wait_for(browser, "return window.viewerState && window.viewerState.projectionsReady")
        overflow = browser.execute_script(
            "const W = document.documentElement.clientWidth; const out = [];"
            "for (const e of document.querySelectorAll('body *')) {"
            "  const r = e.getBoundingClientRect(); if (r.width > 0 && r.right > W + 0.5) "
            "out.push(e.tagName + '#' + e.id); }"
            "for (const e of document.querySelectorAll('.scroll')) {"
            "  if (e.scrollWidth > e.clientWidth + 1) out.push('scrolls: ' + e.firstChild.id); }"
            "return [W, out];")
        assert overflow[0] <= 1280 and overflow[1] == [], overflow
        assert browser.execute_script("return document.querySelectorAll('#legend th').length") == 9
        # the label band under the drilling plot: text near the right edge, none on the edge
        band = browser.execute_script(
            "const c = document.getElementById('drilling'); const g = c.getContext('2d');"
            "const y0 = c.height - 20, d = g.getImageData(0, y0, c.width, 14).data;"
            "const cols = new Array(c.width).fill(0);"
            "for (let n = 0; n < d.length; n += 4) if (d[n] > 90) cols[(n / 4) % c.width] += 1;"
            "return cols;")
        assert sum(band[-45:-2]) > 0 and sum(band[-2:]) == 0
    finally:
        browser.set_window_size(size["width"], size["height"])


def test_metrics_against_a_chosen_reader(dataset, tmp_path):
    from ctsearcher_jax.metrics.protocol import score_pairs

    item = load_dataset(dataset)[0]
    out = tmp_path / "m.html"
    assert main(["view", "--data", str(dataset), "--name", item.name, "--score",
                 "--reference", str(item.readers[1].subject), "--out", str(out)]) == 0
    data = embedded(out)
    assert data["reference"] == 1 and data["paths"][1].get("metrics") is None
    expected = score_pairs([item.readers[1].as_array()], [item.readers[0].as_array()])
    got = data["paths"][0]["metrics"]
    for name, values in expected.items():
        assert got[name] == pytest.approx(float(values[0]), rel=1e-12, abs=1e-12)
    assert "multimatch_mean" in got and "sed" in got
    assert main(["view", "--data", str(dataset), "--name", item.name, "--score",
                 "--reference", "99", "--out", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def test_view_refuses_to_overwrite_its_input_and_writes_a_folder(dataset, tmp_path, capsys):
    item = load_dataset(dataset)[0]
    json_path = dataset / "data_simplified_split_matched_pt.json"
    before = json_path.read_bytes()
    assert main(["view", "--data", str(dataset), "--name", item.name, "--out", str(json_path)
                 .replace(".json", ".html")]) == 0          # a sibling .html is fine ...
    (dataset / "data_simplified_split_matched_pt.html").unlink()
    volume = dataset / "cts" / f"{item.name}.nii.gz"
    link = tmp_path / "same.html"
    link.symlink_to(volume)
    assert main(["view", "--data", str(dataset), "--name", item.name, "--out", str(link)]) == 2
    assert "is the input" in capsys.readouterr().err       # ... the volume itself is not
    assert json_path.read_bytes() == before
    assert main(["view", "--data", str(dataset), "--name", item.name, "--out",
                 str(tmp_path / "pages")]) == 0
    assert (tmp_path / "pages" / f"{item.name}_viewer.html").stat().st_size > 1000
    assert f"{item.name}_viewer.html" in capsys.readouterr().out


def test_a_size_budget_coarsens_the_step():
    from ctsearcher_jax.viz.viewer import encode_slices_within

    rng = np.random.default_rng(1)
    data = rng.normal(0, 300, size=(32, 32, 4)).astype(np.float32)
    full = encode_slices_within(data, hu_step=1.0, max_bytes=None)
    size = sum(len(s) for s in full["slices"])
    coarse = encode_slices_within(data, hu_step=1.0, max_bytes=int(size * 0.8))
    assert full["step"] == 1.0 and coarse["step"] in (2.0, 4.0, 8.0, 16.0)
    assert sum(len(s) for s in coarse["slices"]) <= size * 0.8
    np.testing.assert_allclose(decode_slice(coarse, 0), np.clip(data[:, :, 0], -1024, 3071),
                               atol=coarse["step"] / 2 + 1e-3)


def test_names_cannot_break_out_of_the_page():
    from ctsearcher_jax.viz.viewer import render_html

    hostile = "</script><script>alert(1)</script><!--{{SCRIPT}}{{DATA}}"
    page = render_html({"name": hostile, "paths": [{"label": hostile}]})
    assert "<script>alert" not in page and "<!--" not in page
    assert page.count("window.viewerState = ") == 1
    start = page.index('id="viewer-data">') + len('id="viewer-data">')
    data = json.loads(page[start:page.index("</script>", start)])
    assert data["name"] == data["paths"][0]["label"] == hostile


def test_hostile_names_and_subjects_are_text_in_the_browser(browser, tmp_path):
    """Issue 24.3: a CT name and subjects carrying markup, `$`, quotes, a newline and a
    right-to-left override are shown as written (control characters made visible) in the title,
    the header and the legend; nothing they carry becomes an element or runs."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hostile_inputs import HOSTILE_NAMES, HOSTILE_SUBJECTS

    from ctsearcher_jax.text import visible
    from ctsearcher_jax.viz.viewer import write_viewer

    name = HOSTILE_NAMES[1]
    volume = CTVolume(np.linspace(-1000, 1000, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE),
                      (1.0, 1.0, 1.0), tmp_path / f"{name}.nii.gz")
    paths = [ViewerPath(f"reader {s}", "gt", sp([100, 200], [100, 300], [2, 5], [0.3, 0.4],
                                                  subject=s, name=name), source="<b>src</b>")
             for s in HOSTILE_SUBJECTS]
    out, _ = write_viewer(tmp_path / "hostile.html", volume, paths, name=name,
                          sources={"dataset": "<img src=x onerror=alert(3)>"})
    browser.get(out.as_uri())
    assert wait_for(browser, "return window.viewerState && window.viewerState.projectionsReady")
    assert browser.title == f"{visible(name)}: scanpath viewer"
    assert browser.find_element("id", "title").text == f"CT {visible(name)}: scanpath viewer"
    legend = browser.find_element("id", "legend").text
    for s in HOSTILE_SUBJECTS:
        assert f"reader {visible(s)}" in legend
    assert "<img src=x onerror=alert(3)>" in browser.find_element("id", "meta").text
    injected = browser.execute_script(
        "return document.querySelectorAll('img, b, #meta script, #legend script').length")
    assert injected == 0
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
