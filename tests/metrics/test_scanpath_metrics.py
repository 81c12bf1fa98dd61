"""ScanMatch, MultiMatch and SED against the original's numbers (tests/fixtures/metrics/metrics_pairs.json).

Every pair was produced by running the original code (see the fixture's `meta`); the bar is 1e-6
(SED exactly, MultiMatch `dp` on the pairs that are not tie-sensitive).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from ctsearcher_jax.metrics import multimatch as mm
from ctsearcher_jax.metrics import scanmatch as sm
from ctsearcher_jax.metrics import sed as sed_mod


@pytest.fixture(scope="module")
def pairs(fixtures_dir):
    data = json.loads((fixtures_dir / "metrics" / "metrics_pairs.json").read_text())
    out = []
    for p in data["pairs"]:
        out.append(dict(p, gt_a=np.asarray(p["gt"], np.float64).reshape(-1, 4),
                        pred_a=np.asarray(p["pred"], np.float64).reshape(-1, 4)))
    assert len(out) == 60
    return out


@pytest.fixture(scope="module")
def mm_inputs(pairs):
    padded = [mm.pad_like_original(p["gt_a"], p["pred_a"]) for p in pairs]
    return [g for g, _ in padded], [q for _, q in padded]


# ------------------------------------------------------------------------------- ScanMatch

def test_scanmatch_symbols_match_intermediates(pairs):
    for p in pairs[:10]:
        it = p["results"]["intermediate"]
        assert sm.fixations_to_symbols(p["gt_a"], sm.WITH_DURATION).tolist() == it["sm_seq_gt_wd"]
        assert sm.fixations_to_symbols(p["pred_a"], sm.WITH_DURATION).tolist() == it["sm_seq_pred_wd"]
        assert sm.fixations_to_symbols(p["gt_a"], sm.WITHOUT_DURATION).tolist() == it["sm_seq_gt_wod"]
        assert sm.fixations_to_symbols(p["pred_a"], sm.WITHOUT_DURATION).tolist() == it["sm_seq_pred_wod"]


def test_scanmatch_duration_rounding_quirks():
    # 1.013 s * 1000 = 1012.999... -> 1012 ms -> round(40.48) = 40 repeats (not 41);
    # float32(0.038) -> 37 ms -> 1 repeat; 0.0375 s -> 37 ms -> round(1.48) = 1; 62 ms -> round(2.48)=2;
    # 12 ms -> round(0.48) = 0 (the fixation disappears); 0.0625 -> 62 -> 2.
    durations = [1.013, float(np.float32(0.038)), 0.0375, 0.012, 0.0625]
    fix = np.array([[10.0, 10.0, 10.0, d] for d in durations])
    symbols = sm.fixations_to_symbols(fix, sm.WITH_DURATION)
    assert len(symbols) == 40 + 1 + 1 + 0 + 2


@pytest.mark.parametrize("kernel", ["native", "stripe"])
@pytest.mark.parametrize("key,params", [("scanmatch_with_duration", sm.WITH_DURATION),
                                        ("scanmatch_without_duration", sm.WITHOUT_DURATION)])
def test_scanmatch_parity_all_pairs(pairs, key, params, kernel):
    """Both gap-0 kernels against the original's numbers: the native one (the CPU default) and
    the jnp stripe kernel (accelerators, and CPUs without a C++ compiler)."""
    got = sm.scanmatch_batch([p["gt_a"] for p in pairs], [p["pred_a"] for p in pairs], params,
                             kernel=kernel)
    ref = np.array([p["results"][key] for p in pairs])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_scanmatch_both_empty_is_nan_one_empty_is_zero():
    short = np.array([[5.0, 5.0, 5.0, 0.005]])  # 5 ms -> 0 repeats: empty symbol sequence
    normal = np.array([[5.0, 5.0, 5.0, 0.3]])
    res = sm.scanmatch_batch([short, short, normal], [short, normal, short])
    assert np.isnan(res[0]) and res[1] == 0.0 and res[2] == 0.0


def test_scanmatch_batch_equals_single(pairs):
    """A pair's score does not depend on what else is in the batch (masking, padding, chunking)."""
    idx = [0, 7, 33, 40]
    gt = [pairs[i]["gt_a"] for i in idx]
    pred = [pairs[i]["pred_a"] for i in idx]
    batch = sm.scanmatch_batch(gt, pred, sm.WITHOUT_DURATION)
    for k, i in enumerate(idx):
        single = sm.scanmatch(pairs[i]["gt_a"], pairs[i]["pred_a"], sm.WITHOUT_DURATION)
        assert single == batch[k]


def test_substitution_matrix_is_threshold_minus_distance():
    s = sm.substitution_matrix((6, 4, 8), 3.5)
    assert s.shape == (192, 192)
    # symbol = yb*48 + xb*8 + zb: (0,0,0) vs (1,2,3) is distance sqrt(1+4+9).
    assert s[0, 1 * 48 + 2 * 8 + 3] == pytest.approx(3.5 - np.sqrt(14), abs=1e-12)
    assert np.max(s) == pytest.approx(3.5, abs=1e-12)


# ------------------------------------------------------------------------------- SED

def test_sed_strings_match_intermediates(pairs):
    for p in pairs[:10]:
        it = p["results"]["intermediate"]
        for arr, key in ((p["gt_a"], "sed_string_gt"), (p["pred_a"], "sed_string_pred")):
            codes = sed_mod.fixations_to_codes(arr, "legacy")
            assert "".join(chr(97 + int(c)) for c in codes) == it[key]


def test_sed_parity_exact(pairs):
    got = sed_mod.sed_batch([p["gt_a"] for p in pairs], [p["pred_a"] for p in pairs])
    ref = np.array([p["results"]["sed"] for p in pairs])
    assert got.tolist() == ref.tolist()


def test_sed_levenshtein_hand_cases():
    words = [("kitten", "sitting", 3), ("", "abc", 3), ("flaw", "lawn", 2), ("same", "same", 0)]
    a = [np.array([ord(c) for c in w1], np.int32) for w1, _, _ in words]
    b = [np.array([ord(c) for c in w2], np.int32) for _, w2, _ in words]
    assert sed_mod.levenshtein_batch(a, b).tolist() == [d for _, _, d in words]


def test_sed_bijective_code_has_no_collisions():
    edges = np.array([0.0, 101.9, 102.0, 305.0, 510.0])
    cells = np.array(np.meshgrid(edges, edges, edges, indexing="ij")).reshape(3, -1).T
    fix = np.concatenate([cells, np.ones((len(cells), 1))], axis=1)
    legacy = sed_mod.fixations_to_codes(fix, "legacy")
    bij = sed_mod.fixations_to_codes(fix, "bijective")
    bins = np.unique(fix[:, :3].astype(np.int32) // 102, axis=0)
    assert len(np.unique(bij)) == len(bins)
    assert len(np.unique(legacy)) < len(bins)  # the original code collides


# ------------------------------------------------------------------------------- MultiMatch

def test_multimatch_padding_and_paths_match_intermediates(pairs, mm_inputs):
    gts, preds = mm_inputs
    for k, p in enumerate(pairs[:10]):
        it = p["results"]["intermediate"]
        assert np.array_equal(np.asarray(it["mm_gt_padded"]), gts[k])
        assert np.array_equal(np.asarray(it["mm_pred_padded"]), preds[k])
        m = mm.saccade_matrix(gts[k][:, :3], preds[k][:, :3])
        assert list(m.shape) == it["mm_M_shape"]
        ci, cj = mm.dijkstra_path(m)
        assert (ci * m.shape[1] + cj).tolist() == it["mm_dijkstra_path"]


def test_grid_graph_equals_original_coo_construction():
    rng = np.random.default_rng(0)
    m = rng.random((5, 7))
    m[1, 2] = 0.0  # explicit zero weight must survive as an edge, as in the original
    rows, cols, w = [], [], []
    r, c = m.shape
    for i in range(r):  # the original's node-by-node loop, written out for the comparison
        for j in range(c):
            n = i * c + j
            if i == r - 1 and j < c - 1:
                rows += [n]; cols += [n + 1]; w += [m[i, j + 1]]
            elif i < r - 1 and j == c - 1:
                rows += [n]; cols += [n + c]; w += [m[i + 1, j]]
            elif i == r - 1 and j == c - 1:
                rows += [n]; cols += [n]; w += [0]
            else:
                rows += [n] * 3; cols += [n + 1, n + c, n + c + 1]
                w += [m[i, j + 1], m[i + 1, j], m[i + 1, j + 1]]
    ref = sp.coo_matrix((np.asarray(w, float), (rows, cols)), shape=(r * c, r * c)).tocsr()
    got = mm.grid_graph(m)
    assert np.array_equal(ref.indptr, got.indptr)
    assert np.array_equal(ref.indices, got.indices)
    assert np.array_equal(ref.data, got.data)


def test_multimatch_exact_parity_all_pairs(pairs, mm_inputs):
    got = mm.multimatch_batch(*mm_inputs, alignment="exact")
    ref = np.array([p["results"]["multimatch"] for p in pairs])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_multimatch_dp_parity_on_untied_pairs(pairs, mm_inputs):
    got = mm.multimatch_batch(*mm_inputs, alignment="dp")
    ref = np.array([p["results"]["multimatch"] for p in pairs])
    tied = np.array([p["results"]["multimatch_tie_sensitive"] for p in pairs])
    assert 0 < tied.sum() < len(pairs)
    np.testing.assert_allclose(got[~tied], ref[~tied], rtol=0, atol=1e-6)
    # On tied pairs dp picks another cheapest path: same cost, possibly other medians.
    assert np.all(np.isfinite(got[tied]))


def test_multimatch_dp_path_has_the_dijkstra_cost(mm_inputs):
    gts, preds = mm_inputs
    idx = [5, 20, 33]
    _, paths = mm.multimatch_batch([gts[i] for i in idx], [preds[i] for i in idx], "dp",
                                   return_paths=True)
    for k, i in enumerate(idx):
        m = mm.saccade_matrix(gts[i][:, :3], preds[i][:, :3])
        pi, pj = paths[k]
        ei, ej = mm.dijkstra_path(m)
        dp_cost = m[pi, pj].sum() - m[0, 0]
        exact_cost = m[ei, ej].sum() - m[0, 0]
        assert dp_cost == pytest.approx(exact_cost, rel=1e-12, abs=1e-9)


def test_multimatch_batch_equals_single(mm_inputs):
    gts, preds = mm_inputs
    idx = [3, 5, 12, 16]
    for alignment in ("exact", "dp"):
        batch = mm.multimatch_batch([gts[i] for i in idx], [preds[i] for i in idx], alignment)
        for k, i in enumerate(idx):
            single = mm.multimatch(gts[i], preds[i], alignment)
            np.testing.assert_array_equal(single, batch[k])


def test_multimatch_short_scanpaths_are_nan_without_padding():
    two = np.array([[1.0, 2.0, 3.0, 0.2], [4.0, 5.0, 6.0, 0.3]])
    three = np.array([[1.0, 2.0, 3.0, 0.2], [4.0, 5.0, 6.0, 0.3], [7.0, 8.0, 9.0, 0.1]])
    res = mm.multimatch_batch([two, three], [three, three])
    assert np.all(np.isnan(res[0])) and np.allclose(res[1], 1.0)


def test_multimatch_2d_equals_multimatch_gaze():
    from multimatch_gaze import multimatch_gaze as mmg
    rng = np.random.default_rng(3)
    dtype = {"names": ("start_x", "start_y", "duration"), "formats": ("f8", "f8", "f8")}
    gts, preds, refs = [], [], []
    for n1, n2 in [(5, 7), (12, 9), (30, 30), (4, 4)]:
        a = np.column_stack([rng.uniform(0, 1280, n1), rng.uniform(0, 720, n1), rng.uniform(0.1, 0.5, n1)])
        b = np.column_stack([rng.uniform(0, 1280, n2), rng.uniform(0, 720, n2), rng.uniform(0.1, 0.5, n2)])
        if n1 == 4:
            b = a.copy()
            b[2] = b[1]  # a repeated fixation: zero-length saccade and cost ties
        ra = np.array([tuple(r) for r in a], dtype=dtype)
        rb = np.array([tuple(r) for r in b], dtype=dtype)
        refs.append(mmg.docomparison(ra, rb, screensize=[1280, 720]))
        gts.append(a)
        preds.append(b)
    got = mm.multimatch_batch(gts, preds, "exact", screen=(1280, 720))
    np.testing.assert_allclose(got, np.asarray(refs, float), rtol=0, atol=1e-9)


def _nw_reference(a, b, sub, gap):
    """The original's fill (init F[i, 0] = gap*(i+1), F[0, j] = gap*(j+1)), written out."""
    f = np.zeros((len(a) + 1, len(b) + 1))
    f[:, 0] = gap * (np.arange(len(a) + 1) + 1)
    f[0, :] = gap * (np.arange(len(b) + 1) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            f[i, j] = max(f[i - 1, j - 1] + sub[a[i - 1], b[j - 1]], f[i - 1, j] + gap, f[i, j - 1] + gap)
    return f.max()


@pytest.mark.parametrize("gap,bins,threshold", [(0.0, (6, 4, 8), 3.5), (0.0, (5, 3, 7), 2.0),
                                                (0.0, (12, 8, 1), 3.5), (-0.5, (6, 4, 8), 3.5),
                                                (0.25, (6, 4, 8), 3.5)])
def test_needleman_wunsch_kernels_equal_the_written_out_dp(gap, bins, threshold):
    """gap 0 uses the kernel that computes scores arithmetically: must be bit-identical to the table."""
    rng = np.random.default_rng(11)
    params = sm.ScanMatchParams(gap=gap, bins=bins, threshold=threshold)
    sub = sm.substitution_matrix(params.bins, params.threshold)
    k = params.num_symbols
    seqs = [(rng.integers(0, k, rng.integers(0, 30)).astype(np.int32),
             rng.integers(0, k, rng.integers(0, 30)).astype(np.int32)) for _ in range(6)]
    seqs.append((np.zeros(0, np.int32), np.array([3, 4], np.int32)))
    ref = [float(_nw_reference(a, b, sub, gap)) for a, b in seqs]
    for kernel in ("stripe", "native") if gap == 0 else ("auto",):
        got = sm.nw_max_batch([a for a, _ in seqs], [b for _, b in seqs], params, chunk=4,
                              kernel=kernel)
        assert got.tolist() == ref, kernel


def _runs(rng, k, n_runs, max_run):
    """A symbol sequence shaped like a duration-expanded scanpath: runs of repeated symbols."""
    return np.repeat(rng.integers(0, k, n_runs), rng.integers(1, max_run, n_runs)).astype(np.int32)


@pytest.mark.parametrize("bins,threshold", [((6, 4, 8), 3.5), ((2, 2, 2), 3.5)])
def test_striped_kernel_long_sequences_bit_identical(bins, threshold):
    """Several stripes, runs, partial last stripes, a threshold above the largest distance (every
    real pair scores > 0, only the padding may not), the vmapped (accelerator) path, the
    one-pair-per-thread path and the native kernel: all bit-identical to the written-out DP."""
    rng = np.random.default_rng(5)
    params = sm.ScanMatchParams(bins=bins, threshold=threshold)
    k = params.num_symbols
    seqs = [(_runs(rng, k, 40, 14), _runs(rng, k, 45, 14)),   # ~280 x ~300: two stripes
            (_runs(rng, k, 70, 12), _runs(rng, k, 8, 6)),     # long rows vs short columns (swapped)
            (_runs(rng, k, 3, 4), _runs(rng, k, 90, 10)),     # a few rows, many columns
            (np.array([5], np.int32), np.array([5], np.int32))]
    sub = np.maximum(sm.substitution_matrix(params.bins, params.threshold), 0)
    ref = [float(_nw_reference(a, b, sub, 0.0)) for a, b in seqs]
    gt, pred = [a for a, _ in seqs], [b for _, b in seqs]
    per_thread = sm.nw_max_batch(gt, pred, params, threads=2, kernel="stripe")
    vmapped = sm.nw_max_batch(gt, pred, params, chunk=3, threads=1, kernel="stripe")
    whole_height = sm.nw_max_batch(gt, pred, params, chunk=4, threads=1, stripe=None,
                                   kernel="stripe")  # the accelerator default
    assert per_thread.tolist() == ref
    assert vmapped.tolist() == ref
    assert whole_height.tolist() == ref
    for threads in (1, 3):  # the native kernel (CPU default), one and several host threads
        assert sm.nw_max_batch(gt, pred, params, threads=threads, kernel="native").tolist() == ref
