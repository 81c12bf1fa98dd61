"""The jit, fixed-shape ScanMatch of the RL reward against the evaluation metric (float64 path).

On the 60 reference pairs (tests/fixtures/metrics, up to 445 fixations, durations up to 2 s,
cap 2.0 s) the float64 path equals the metric to 4.2e-17 (stripe kernel, calls of 16 pairs) and
exactly (native kernel), and float32 differs by at most 6.4e-4 (with duration) and 1.3e-7
(without) with either; measured once (the stripe kernel is too slow for the suite at that length).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctsearcher_jax.metrics import scanmatch as sm
from ctsearcher_jax.metrics._batch import x64
from ctsearcher_jax.metrics.scanmatch import reward as rw

L, CAP = 12, 0.5


def _pairs(n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pair = []
        for _ in range(2):
            k = int(rng.integers(0 if i == 0 else 1, L + 1))
            xyz = rng.uniform(-5, 520, (k, 3))  # outside the frame too: clamped like the metric
            t = rng.uniform(0.0, CAP - 0.01, (k, 1))
            pair.append(np.concatenate([xyz, t], 1))
        out.append(pair)
    out.append([np.array([[5.0, 5, 5, 0.005]]), np.array([[5.0, 5, 5, 0.005]])])  # both empty
    return out


def _padded(pairs, dtype):
    def pad(a):
        p = np.zeros((L, 4))
        p[:len(a)] = a
        return p
    g = np.stack([pad(a) for a, _ in pairs]).astype(dtype)
    p = np.stack([pad(b) for _, b in pairs]).astype(dtype)
    return (g[..., :3], g[..., 3], np.array([len(a) for a, _ in pairs]),
            p[..., :3], p[..., 3], np.array([len(b) for _, b in pairs]))


@pytest.mark.slow  # 14 kernel variants, each compiled (22 s): full suite only
@pytest.mark.parametrize("params", [sm.WITH_DURATION, sm.WITHOUT_DURATION])
def test_jit_scanmatch_equals_the_metric(params):
    """float64: exactly the metric, by the native kernel and by the stripe kernel whatever its
    stripe width (1, several and one whole stripe, partial last stripes) and grouping (sorted
    calls of G pairs, the last one filled with empty pairs); float32 within 1e-3, and the two
    kernels within 1e-6 of each other."""
    pairs = _pairs()
    ref = sm.scanmatch_batch([a for a, _ in pairs], [b for _, b in pairs], params)
    with x64():
        args64 = [jnp.asarray(x) for x in _padded(pairs, np.float64)]
        assert len(pairs) % 3 and len(pairs) % 4, "the grouped cases must need filler pairs"
        # the stripe widths and groupings split the same DP whatever the parameters: the full
        # set with durations, the default and one partial, grouped case without
        shapes = [(None, None), (8, 3), (5, None), (1, 2), (10_000, 4), (64, 16)]
        if params is sm.WITHOUT_DURATION:
            shapes = shapes[:2]
        cases = [("native", None, None)] + [("stripe", w, g) for w, g in shapes]
        for kernel, width, group in cases:
            fn = jax.jit(lambda *a, k=kernel, w=width, g=group: rw.scanmatch_pairs(
                *a, params=params, duration_cap_s=CAP, width=w, group_size=g, kernel=k))
            np.testing.assert_allclose(np.asarray(fn(*args64)), ref, rtol=0, atol=1e-12,
                                       err_msg=f"{kernel}: width {width}, group size {group}")
    args32 = _padded(pairs, np.float32)
    got32 = {kernel: np.asarray(jax.jit(lambda *a, k=kernel: rw.scanmatch_pairs(
        *a, params=params, duration_cap_s=CAP, group_size=4, kernel=k))(*args32))
        for kernel in ("native", "stripe")}
    for got in got32.values():
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)  # NaN where both are empty
    # Same sums in the same order; only the float32 scores are rounded differently (the native
    # kernel rounds the float64 table, the stripe kernel computes them in float32).
    np.testing.assert_allclose(got32["native"], got32["stripe"], rtol=0, atol=1e-6)


def test_reward_is_the_harmonic_mean_per_sample_and_caps_durations():
    """hmean_reward scores S samples against their row's recorded scanpath: (B, S)."""
    pairs = _pairs(6, seed=1)[:6]
    g0, gd, gl, c, d, cl = _padded(pairs, np.float32)
    # B = 2 recorded scanpaths, S = 3 samples each: samples 0-2 against pair 0's ground truth,
    # samples 3-5 against pair 3's.
    gt = [pairs[0][0]] * 3 + [pairs[3][0]] * 3
    reward = np.asarray(jax.jit(lambda *a: rw.hmean_reward(*a, duration_cap_s=CAP, group_size=4))(
        g0[[0, 3]], gd[[0, 3]], gl[[0, 3]], c.reshape(2, 3, L, 3), d.reshape(2, 3, L),
        cl.reshape(2, 3)))
    a = sm.scanmatch_batch(gt, [y for _, y in pairs], sm.WITH_DURATION)
    b = sm.scanmatch_batch(gt, [y for _, y in pairs], sm.WITHOUT_DURATION)
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    expected = np.where(a + b > 0, 2 * a * b / np.where(a + b > 0, a + b, 1), 0)
    assert reward.shape == (2, 3)
    np.testing.assert_allclose(reward.reshape(-1), expected, atol=1e-3)
    assert rw.max_expanded_length(L, CAP) == L * 20
    # a fixation longer than the cap counts as the cap
    long = jnp.array([[10.0, 10, 10]]), jnp.array([3.0]), jnp.array(1)
    short = jnp.array([[10.0, 10, 10]]), jnp.array([CAP]), jnp.array(1)
    sym_long = rw.symbols(*long, params=sm.WITH_DURATION, max_symbols=20, duration_cap_s=CAP)
    sym_cap = rw.symbols(*short, params=sm.WITH_DURATION, max_symbols=20, duration_cap_s=CAP)
    assert int(sym_long[1]) == int(sym_cap[1]) == 20


def test_symbols_expand_each_fixation_by_its_25ms_bins():
    """Repeats round(int(ms) / 25) (0 for very short fixations), cut at max_symbols: the metric's
    own expansion, padded with 0."""
    coords = jnp.array([[10.0, 10, 10], [300, 200, 100], [500, 40, 250], [100, 400, 30], [0, 0, 0]])
    durations = jnp.array([0.26, 0.011, 0.049, 0.5, 0.3])  # 10, 0, 2, 20 repeats; last unused
    fix = np.concatenate([np.asarray(coords), np.asarray(durations)[:, None]], 1)[:4]
    expected = sm.fixations_to_symbols(fix.astype(np.float64), sm.WITH_DURATION)
    assert len(expected) == 32
    for max_symbols in (40, 32, 25):
        sym, n = rw.symbols(coords, durations, jnp.array(4), params=sm.WITH_DURATION,
                            max_symbols=max_symbols, duration_cap_s=CAP)
        assert int(n) == min(32, max_symbols)
        np.testing.assert_array_equal(np.asarray(sym)[:int(n)], expected[:max_symbols])
        assert not np.asarray(sym)[int(n):].any()


def test_native_reward_equals_the_original_numbers_on_the_reference_pairs(fixtures_dir):
    """The 60 pairs the original scored (up to 445 fixations, durations up to 2 s; cap 2 s):
    the native kernel in float64 reproduces the original's numbers (to its 1e-6 bar) and the
    metric exactly; in float32 within the measured 6.4e-4 (module docstring)."""
    import json

    data = json.loads((fixtures_dir / "metrics" / "metrics_pairs.json").read_text())
    gt = [np.asarray(p["gt"], np.float64).reshape(-1, 4) for p in data["pairs"]]
    pred = [np.asarray(p["pred"], np.float64).reshape(-1, 4) for p in data["pairs"]]
    n = max(len(x) for x in gt + pred)

    def padded(xs, dtype):
        out = np.zeros((len(xs), n, 4))
        for i, x in enumerate(xs):
            out[i, :len(x)] = x
        return out[..., :3].astype(dtype), out[..., 3].astype(dtype), np.array([len(x) for x in xs])

    for key, params in [("scanmatch_with_duration", sm.WITH_DURATION),
                        ("scanmatch_without_duration", sm.WITHOUT_DURATION)]:
        original = np.array([p["results"][key] for p in data["pairs"]])
        metric = sm.scanmatch_batch(gt, pred, params)
        fn = jax.jit(lambda *a, p=params: rw.scanmatch_pairs(*a, params=p, duration_cap_s=2.0,
                                                              kernel="native"))
        with x64():
            got64 = np.asarray(fn(*padded(gt, np.float64), *padded(pred, np.float64)))
        got32 = np.asarray(fn(*padded(gt, np.float32), *padded(pred, np.float32)))
        np.testing.assert_array_equal(got64, metric)
        np.testing.assert_allclose(got64, original, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got32, metric, rtol=0, atol=7e-4)
