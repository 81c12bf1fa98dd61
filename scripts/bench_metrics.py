#!/usr/bin/env python
"""Benchmark: score one CT (10 readers x 10 predicted scanpaths, all 100 pairs, every metric).

Compares, in the same run:
  * ours: `ctsearcher_jax.metrics` batched (jit + vmap), MultiMatch with `dp` and with `exact`;
  * a straightforward per-pair NumPy/Python implementation of the same algorithms (below: small
    and readable; ScanMatch and SED row-by-row with NumPy, MultiMatch with scipy's Dijkstra);
  * `multimatch-gaze` (2D MultiMatch on the x, y projection) on a subset of pairs (it builds its
    graph node by node in Python, so all 100 pairs would take minutes).

Scanpaths come from the synthetic generator (`ctsearcher_jax.data.synthetic`): one phantom CT,
10 reader styles for the ground truth and 10 other (seeded) reader styles as "predictions",
100-400 fixations each. Times are wall-clock seconds on whatever machine runs this (the numbers
in docs/benchmarks.md were measured on the project's 2-core CPU while other jobs were running).

The whole evaluation of the CT (every metric, `dp` and `exact`) is timed in a fresh Python
process each, which also reports that process's peak memory (RSS: Python, JAX, the data and the
evaluation), so the other runs of this script do not inflate it.

Usage: python scripts/bench_metrics.py [--seed 0] [--mmg-pairs 4] [--ref-pairs 100] [--json out.json]
       [--skip-reference]   (ours only: e.g. on an accelerator machine without multimatch-gaze)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from scipy.sparse import csgraph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------ data

def make_ct(seed: int, n_gt: int = 10, n_pred: int = 10, lo: int = 100, hi: int = 400):
    """(gt, pred): lists of (n, 4) [x, y, z, s] scanpaths over one synthetic CT."""
    from ctsearcher_jax.data import synthetic as syn

    hu, _, lesions = syn.make_phantom(rng=np.random.default_rng(seed))

    def path(style_seed, subject, rng_seed):
        g = syn.make_scanpath(hu, lesions, syn.reader_style(style_seed, subject),
                              np.random.default_rng(rng_seed), min_fixations=lo, max_fixations=hi)
        return np.column_stack([g.x, g.y, g.z, g.t])

    gt = [path(seed, s, 1000 * seed + s) for s in range(1, n_gt + 1)]
    pred = [path(seed + 1, s, 1000 * seed + 500 + s) for s in range(1, n_pred + 1)]
    return gt, pred


# ------------------------------------------------------------------------------ reference (per pair)

def ref_symbols(fix, temp_bin):
    d = fix.copy()
    d[:, 3] *= 1000.0
    d[d < 0] = 0
    d[:, :3] = np.minimum(d[:, :3], 511)
    d = np.trunc(d).astype(np.int64)
    sym = (d[:, 1] * 4 // 512) * 48 + (d[:, 0] * 6 // 512) * 8 + (d[:, 2] * 8 // 512)
    if temp_bin:
        sym = np.repeat(sym, np.round(d[:, 3] / temp_bin).astype(np.int64))
    return sym


def ref_sub_matrix():
    c = np.array([(s // 48, (s // 8) % 6, s % 8) for s in range(192)])
    dist = np.sqrt(((c[:, None, :] - c[None, :, :]) ** 2).sum(-1).astype(np.float64))
    return np.abs(dist - dist.max()) - (dist.max() - 3.5)


def ref_scanmatch(gt, pred, temp_bin, sub):
    """Needleman-Wunsch with gap 0, one NumPy row at a time (F is monotone: cummax)."""
    a, b = ref_symbols(gt, temp_bin), ref_symbols(pred, temp_bin)
    if len(a) == 0 and len(b) == 0:
        return math.nan
    f = np.zeros(len(b) + 1)
    for sym in a:
        diag = f[:-1] + sub[sym, b]
        row = np.empty_like(f)
        row[0] = 0.0
        row[1:] = np.maximum(f[1:], diag)
        f = np.maximum.accumulate(row)
    return f[-1] / (3.5 * max(len(a), len(b)))


def ref_sed(gt, pred):
    def codes(f):
        i = f[:, :3].astype(np.int32) // 102
        return i[:, 0] + i[:, 1] * 5 // 2 + i[:, 2] * 5 // 2

    a, b = codes(gt), codes(pred)
    prev = np.arange(len(b) + 1)
    ar = np.arange(len(b) + 1)
    for i, ch in enumerate(a, start=1):
        x = np.empty_like(prev)
        x[0] = i
        x[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (b != ch))
        prev = np.minimum.accumulate(x - ar) + ar
    return int(prev[-1])


def ref_multimatch(gt, pred, screen=(512, 512, 512)):
    """Original padding, M matrix, scipy Dijkstra, medians along the path."""
    pad = np.array([[1.0, 1.0, 1.0, 1e-3]])
    if len(gt) < 3:
        gt = np.vstack([gt] + [pad] * (3 - len(gt)))
    if len(pred) < 3:
        pred = np.vstack([pred] + [pad] * (3 - len(pred)))
    if len(pred) < len(gt):
        pred = np.vstack([pred] + [pad] * (len(gt) - len(pred)))
    vg, vp = np.diff(gt[:, :3], axis=0), np.diff(pred[:, :3], axis=0)
    m = np.sqrt(((vg[:, None, :] - vp[None, :, :]) ** 2).sum(-1))
    r, c = m.shape
    rows, cols, w = [], [], []
    node = np.arange(r * c).reshape(r, c)
    for di, dj in ((0, 1), (1, 0), (1, 1)):
        src = node[: r - di, : c - dj].ravel()
        rows.append(src)
        cols.append(src + di * c + dj)
        w.append(m[di:, dj:].ravel())
    g = sp.coo_matrix((np.concatenate(w), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(r * c, r * c)).tocsr()
    _, pre = csgraph.dijkstra(g, directed=True, indices=0, return_predecessors=True)
    path = [r * c - 1]
    while pre[path[-1]] >= 0:
        path.append(pre[path[-1]])
    i, j = np.divmod(np.asarray(path), c)

    def ang(v):
        t = np.arctan2(v[:, 1], v[:, 0])
        return np.where(t < 0, np.pi + (np.pi + t), t)

    def fold(x):
        return np.where(x > np.pi, 2 * np.pi - x, x)

    a, b = vg[i], vp[j]
    phi_a = np.arctan2(np.hypot(a[:, 0], a[:, 1]), a[:, 2])
    phi_b = np.arctan2(np.hypot(b[:, 0], b[:, 1]), b[:, 2])
    direction = fold(fold(np.abs(ang(a) - ang(b))) + fold(np.abs(phi_a - phi_b)))
    dg, dp = gt[i, 3], pred[j, 3]
    med = [np.median(np.linalg.norm(a - b, axis=1)), np.median(direction),
           np.median(np.abs(np.linalg.norm(a, axis=1) - np.linalg.norm(b, axis=1))),
           np.median(np.linalg.norm(gt[i, :3] - pred[j, :3], axis=1)),
           np.median(np.abs(dg - dp) / np.maximum(dg, dp))]
    diag = math.sqrt(sum(s * s for s in screen))
    return [1 - med[0] / (2 * diag), 1 - med[1] / math.pi, 1 - med[2] / diag, 1 - med[3] / diag,
            1 - med[4]]


# ------------------------------------------------------------------------------ timing helpers

CPU_TIMES: dict[str, float] = {}


def timed(fn, *args, **kwargs):
    """(result, wall seconds); the process CPU seconds go to CPU_TIMES[label] when label= is given
    (CPU time is less sensitive than wall time to other jobs on a shared machine)."""
    label = kwargs.pop("label", None)
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    if label:
        CPU_TIMES[label] = time.process_time() - c
    return out, time.perf_counter() - t


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_whole(seed: int, align: str) -> dict:
    """Cold and warm time and peak RSS of the whole evaluation of one CT, in this process."""
    from ctsearcher_jax.metrics import protocol as proto

    gt, pred = make_ct(seed)
    _, cold = timed(proto.all_pairs_protocol, [gt], [pred], multimatch_alignment=align)
    _, warm = timed(proto.all_pairs_protocol, [gt], [pred], multimatch_alignment=align, label="whole")
    return {"cold_s": cold, "warm_s": warm, "cpu_s": CPU_TIMES["whole"], "peak_rss_mb": peak_rss_mb()}


def whole_in_subprocess(seed: int, align: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--seed", str(seed), "--whole", align],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-pairs", type=int, default=100,
                        help="pairs scored by the per-pair reference (default all 100)")
    parser.add_argument("--mmg-pairs", type=int, default=4,
                        help="pairs scored by multimatch-gaze (slow: Python graph loops)")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--skip-reference", action="store_true",
                        help="time ours only (no per-pair reference, no multimatch-gaze)")
    parser.add_argument("--whole", choices=("dp", "exact"), help=argparse.SUPPRESS)  # subprocess mode
    args = parser.parse_args()
    if args.whole:
        print(json.dumps(measure_whole(args.seed, args.whole)))
        return 0

    from ctsearcher_jax.metrics import multimatch as mm
    from ctsearcher_jax.metrics import protocol as proto

    gt, pred = make_ct(args.seed)
    pairs_gt = [g for _ in pred for g in gt]
    pairs_pred = [p for p in pred for _ in gt]
    n = len(pairs_gt)
    lens = [len(x) for x in gt + pred]
    print(f"CT: {len(gt)} readers x {len(pred)} predictions = {n} pairs; fixations "
          f"{min(lens)}-{max(lens)} (mean {np.mean(lens):.0f})")
    rss0 = peak_rss_mb()

    rows = []
    results = {}
    # Ours, each metric family alone, then the whole evaluation; cold = first call (compiles).
    for label, fams, align in [("scanmatch (both)", ["scanmatch"], "exact"),
                               ("multimatch dp", ["multimatch"], "dp"),
                               ("multimatch exact", ["multimatch"], "exact"),
                               ("sed", ["sed"], "exact")]:
        _, cold = timed(proto.score_pairs, pairs_gt, pairs_pred, fams, multimatch_alignment=align)
        res, warm = timed(proto.score_pairs, pairs_gt, pairs_pred, fams, multimatch_alignment=align,
                          label=f"ours: {label}")
        results[label] = res
        rows.append((f"ours: {label}", cold, warm))
    whole_runs = {}
    for align in ("dp", "exact"):
        w = whole_runs[align] = whole_in_subprocess(args.seed, align)
        label = f"ours: whole CT, every metric, {align}"
        CPU_TIMES[label] = w["cpu_s"]
        rows.append((label, w["cold_s"], w["warm_s"]))
    rss_ours = peak_rss_mb()
    if args.skip_reference:
        print(f"\n{'what':<46} {'cold s':>8} {'warm s':>8} {'cpu s':>8} {'pairs/s':>9}")
        for label, cold, warm in rows:
            print(f"{label:<46} {cold:>8.2f} {warm:>8.2f} {CPU_TIMES[label]:>8.2f} {n / warm:>9.1f}")
        print("peak RSS of the whole evaluation (fresh process): "
              + ", ".join(f"{a} {w['peak_rss_mb']:.0f} MB" for a, w in whole_runs.items()))
        return 0

    # Per-pair reference on the first `ref_pairs` pairs.
    k = min(args.ref_pairs, n)
    sub = ref_sub_matrix()
    ref_sm, t_sm = timed(lambda: [(ref_scanmatch(g, p, 25, sub), ref_scanmatch(g, p, 0, sub))
                                  for g, p in zip(pairs_gt[:k], pairs_pred[:k])],
                       label="reference: scanmatch (both)")
    ref_mm, t_mm = timed(lambda: [ref_multimatch(g, p) for g, p in zip(pairs_gt[:k], pairs_pred[:k])],
                         label="reference: multimatch (scipy Dijkstra)")
    ref_sd, t_sd = timed(lambda: [ref_sed(g, p) for g, p in zip(pairs_gt[:k], pairs_pred[:k])],
                         label="reference: sed")
    CPU_TIMES["reference: whole CT"] = sum(CPU_TIMES[x] for x in (
        "reference: scanmatch (both)", "reference: multimatch (scipy Dijkstra)", "reference: sed"))
    ref_rows = [("reference: scanmatch (both)", t_sm), ("reference: multimatch (scipy Dijkstra)", t_mm),
                ("reference: sed", t_sd), ("reference: whole CT", t_sm + t_mm + t_sd)]

    # Agreement of ours with the reference (same algorithms; exact alignment).
    ours_sm = np.stack([results["scanmatch (both)"]["scanmatch_with_duration"][:k],
                        results["scanmatch (both)"]["scanmatch_without_duration"][:k]], 1)
    ours_mm = np.stack([results["multimatch exact"][f"multimatch_{x}"][:k] for x in mm.NAMES], 1)
    agree = {"scanmatch": float(np.nanmax(np.abs(ours_sm - np.asarray(ref_sm)))),
             "multimatch_exact": float(np.nanmax(np.abs(ours_mm - np.asarray(ref_mm)))),
             "sed": int(np.max(np.abs(results["sed"]["sed"][:k] - np.asarray(ref_sd))))}
    dp_mm = np.stack([results["multimatch dp"][f"multimatch_{x}"] for x in mm.NAMES], 1)
    ex_mm = np.stack([results["multimatch exact"][f"multimatch_{x}"] for x in mm.NAMES], 1)
    dp_gap = np.abs(dp_mm - ex_mm).max(0)

    # 2D MultiMatch: ours vs multimatch-gaze on the x, y projection.
    from multimatch_gaze import multimatch_gaze as mmg

    dtype = {"names": ("start_x", "start_y", "duration"), "formats": ("f8", "f8", "f8")}
    m2 = min(args.mmg_pairs, n)
    g2 = [np.column_stack([g[:, 0], g[:, 1], g[:, 3]]) for g in pairs_gt[:m2]]
    p2 = [np.column_stack([p[:, 0], p[:, 1], p[:, 3]]) for p in pairs_pred[:m2]]
    ref2, t_mmg = timed(lambda: [mmg.docomparison(np.array([tuple(r) for r in a], dtype=dtype),
                                                  np.array([tuple(r) for r in b], dtype=dtype),
                                                  screensize=[512, 512]) for a, b in zip(g2, p2)])
    g2all = [np.column_stack([g[:, 0], g[:, 1], g[:, 3]]) for g in pairs_gt]
    p2all = [np.column_stack([p[:, 0], p[:, 1], p[:, 3]]) for p in pairs_pred]
    mm.multimatch_batch(g2all, p2all, "exact", screen=(512, 512))
    ours2, t_ours2 = timed(mm.multimatch_batch, g2all, p2all, "exact", screen=(512, 512))
    mm.multimatch_batch(g2all, p2all, "dp", screen=(512, 512))
    _, t_ours2dp = timed(mm.multimatch_batch, g2all, p2all, "dp", screen=(512, 512))
    agree["multimatch_2d_vs_multimatch_gaze"] = float(np.max(np.abs(ours2[:m2] - np.asarray(ref2))))

    # dp vs exact on the reference fixture's tie-sensitive pairs.
    fixture = REPO / "tests" / "fixtures" / "metrics" / "metrics_pairs.json"
    tie_gap = None
    if fixture.exists():
        fx = json.loads(fixture.read_text())["pairs"]
        tied = [p for p in fx if p["results"]["multimatch_tie_sensitive"]]
        padded = [mm.pad_like_original(np.asarray(p["gt"], float).reshape(-1, 4),
                                       np.asarray(p["pred"], float).reshape(-1, 4)) for p in tied]
        a = mm.multimatch_batch([x[0] for x in padded], [x[1] for x in padded], "dp")
        b = mm.multimatch_batch([x[0] for x in padded], [x[1] for x in padded], "exact")
        tie_gap = {"pairs": len(tied), "max_abs_diff": dict(zip(mm.NAMES, np.abs(a - b).max(0).round(4).tolist()))}

    # Report.
    print(f"\n{'what':<46} {'cold s':>8} {'warm s':>8} {'cpu s':>8} {'pairs/s':>9}")
    for label, cold, warm in rows:
        print(f"{label:<46} {cold:>8.2f} {warm:>8.2f} {CPU_TIMES[label]:>8.2f} {n / warm:>9.1f}")
    for label, t in ref_rows:
        print(f"{label + f' ({k} pairs)':<46} {'':>8} {t:>8.2f} {CPU_TIMES[label]:>8.2f} {k / t:>9.2f}")
    print(f"{'multimatch-gaze 2D (' + str(m2) + ' pairs)':<46} {'':>8} {t_mmg:>8.2f} {m2 / t_mmg:>9.3f}")
    print(f"{'ours: multimatch 2D exact (100 pairs)':<46} {'':>8} {t_ours2:>8.2f} {n / t_ours2:>9.1f}")
    print(f"{'ours: multimatch 2D dp (100 pairs)':<46} {'':>8} {t_ours2dp:>8.2f} {n / t_ours2dp:>9.1f}")
    whole = {label: warm for label, _, warm in rows}
    ref_whole = (t_sm + t_mm + t_sd) * n / k
    print(f"\nspeed-up vs reference (whole CT): dp {ref_whole / whole['ours: whole CT, every metric, dp']:.1f}x, "
          f"exact {ref_whole / whole['ours: whole CT, every metric, exact']:.1f}x; "
          f"2D MultiMatch vs multimatch-gaze: {(n / t_ours2) / (m2 / t_mmg):.0f}x (exact)")
    print("peak RSS of the whole evaluation (fresh process: Python, JAX, data, evaluation): "
          + ", ".join(f"{a} {w['peak_rss_mb']:.0f} MB" for a, w in whole_runs.items())
          + f"; this process: {rss0:.0f} MB after imports and data, {rss_ours:.0f} MB after ours")
    print(f"agreement ours vs reference: {agree}")
    print(f"MultiMatch dp vs exact on these 100 pairs, max |diff| per dimension: "
          f"{dict(zip(mm.NAMES, dp_gap.round(4).tolist()))}")
    if tie_gap:
        print(f"MultiMatch dp vs exact on the {tie_gap['pairs']} tie-sensitive reference pairs: "
              f"{tie_gap['max_abs_diff']}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "pairs": n, "rows": [{"what": r[0], "cold_s": r[1], "warm_s": r[2]} for r in rows],
            "reference": [{"what": r[0], "s": r[1], "pairs": k} for r in ref_rows],
            "multimatch_gaze": {"pairs": m2, "s": t_mmg}, "ours_2d_exact_s": t_ours2,
            "peak_rss_mb": rss_ours, "whole": whole_runs, "cpu_s": CPU_TIMES, "agreement": agree, "dp_gap": dp_gap.tolist(), "tie_gap": tie_gap,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
