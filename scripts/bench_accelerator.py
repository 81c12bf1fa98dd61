"""One-command accelerator proof: devices, peak matmul, training step, Swin UNETR extraction vs MONAI,
end-to-end `ctsearcher extract`. Prints ONE Markdown table at the end and writes it to `--out`.

    python scripts/bench_accelerator.py --out bench_accelerator.md         # on a GPU/TPU (<= 8 min on H100/H200)
    python scripts/bench_accelerator.py --smoke                            # CPU, tiny sizes (CI: tests/test_bench_accelerator.py)

Sections (each row of the table names its section):
1. devices, JAX/jaxlib/CUDA versions, measured peak bf16 matmul (8192^3; smoke 256^3);
2. CT-Searcher train step, paper config (smoke: tiny), 2 readers per CT, float32 and bfloat16:
   ms/step, CTs/s and MFU = XLA cost-analysis FLOPs per step / step time / the peak measured in 1,
   at batch 2 and at the best batch of a sweep (`--batches`, default 2 8 32; stops at the first
   out-of-memory or when its share of the time budget is spent);
3. Swin UNETR encode (SwinViT + encoder10, random weights) over every window of a synthetic
   512 x 512 x 128 volume (feature_size 48, 96^3 windows, overlap 0: 72 windows; smoke: feature_size
   12, 64^3 windows on 64 x 64 x 48): windows/s, volumes/h and peak device memory for ours
   float32 / bfloat16 and MONAI (PyTorch) float32 / AMP (autocast float16) in the same run, each in its
   own process (clean peaks, no JAX/PyTorch memory fight), plus the bf16-vs-fp32 relative error of
   our features (max |bf16 - fp32| / max |fp32|). MONAI runs the same work (SwinViT + encoder10);
   its float32 uses PyTorch's defaults (TF32 convolutions allowed), ours `precision="highest"`;
4. end-to-end `ctsearcher extract` of 8 such volumes (NIfTI .nii.gz on local disk) with the
   default loader workers, bfloat16, run twice with a fresh persistent compilation cache: volumes/h,
   the share of the encoder loop spent waiting on input, first vs second run compile seconds;
5. the fine-tuning reward (`metrics/scanmatch/reward.hmean_reward`, float32, in one jit call as the
   fine-tuning step runs it on this backend): ms per call for the learning bench's step (16
   (CT, reader) x K=5 samples of up to 64 fixations, ~0.4 s each) and the paper config's batch 2
   (2 CTs x 2 readers x 5), to set against a training step of section 2 (issue 15: the reward must
   not dominate a fine-tuning step). Smoke: 2 x 2 samples of 8 fixations;
6. evaluation of one CT as `scripts/bench_metrics.py` scores it (10 readers x 10 predictions of
   100-400 fixations, every metric, MultiMatch `dp` and `exact`): cold and warm seconds with the
   defaults (ScanMatch by the native kernel on the host's CPU cores, also on accelerator
   machines; the CPU row in docs/benchmarks.md is 0.38 / 1.28 s), and ScanMatch alone by the native kernel
   and by the jnp stripe kernel on this backend (64-pair chunks on accelerators). Smoke: 2 x 2
   scanpaths of 10-20 fixations.

No network: everything is synthetic. Packages missing on the device image (MONAI, nibabel) are
carried as wheels built here with `scripts/bench_wheelhouse.sh` (writes `.whl/`, ignored by git):

    # here (x86-64, pip works):      scripts/bench_wheelhouse.sh
    # there, before the bench:       python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    #                                PYTHONPATH=/tmp/site:. python3 scripts/bench_accelerator.py --out $OUT/bench.md

A section whose packages are missing says so in its row instead of failing the run. `--sections`
runs a subset; `--budget-s` (default 450) bounds the run: the training sweep (bfloat16 first,
the bars' case) stops taking new batch sizes after 45 % of it (sections 3 and 4 take about the
rest on an H100/H200, an estimate until measured).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FULL = {"matmul": 8192, "train_config": "paper", "batches": [2, 8, 32], "steps": 10,
        "fs": 48, "roi": 96, "shape": (512, 512, 128), "swin_batch": 8, "volumes": 8, "repeats": 2,
        "train_dtypes": ("bfloat16", "float32"),
        "reward_shapes": [(16, 5, 64), (4, 5, 400)], "metrics_ct": (10, 100, 400)}
# Smoke: every code path, sizes that compile and run in seconds on a CPU (a micro CT-Searcher
# trained in bfloat16 only: float32 is the same code with another dtype and would double the
# slowest compilation; one 32^3 window of a feature_size 12 Swin UNETR, one timed repeat). MONAI refuses a window with
# a single dec4 cell (its InstanceNorm needs more than one voxel), so in smoke mode it runs one
# 64^3 window and no ratio against ours is printed.
SMOKE = {"matmul": 256, "train_config": "tiny", "batches": [2], "steps": 2,
         "fs": 12, "roi": 32, "shape": (32, 32, 24), "swin_batch": 1, "volumes": 2, "repeats": 1,
         "monai_roi": 64, "monai_shape": (64, 64, 40), "train_dtypes": ("bfloat16",),
         "micro_model": {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1,
                         "num_decoder_layers": 1, "dim_feedforward": 16, "grid": [2, 2, 2],
                         "max_length": 8, "min_length": 2},
         "reward_shapes": [(2, 2, 8)], "metrics_ct": (2, 10, 20)}

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def call_seconds(fn, repeats: int) -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn()` (the first one compiles, if it must)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def jax_peak_mib() -> tuple[float, str]:
    """Peak device memory of this process (MiB, 'device'), or peak RSS on CPU (MiB, 'RSS')."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20, "device"
    return rss_mib(), "RSS"


# ----------------------------------------------------------------------------- 1. devices, peak

def section_devices(p: dict, rows: list) -> float:
    import jax
    import jax.numpy as jnp

    from ctsearcher_jax.runtime.devices import describe, startup_line

    info = describe()
    rows.append(("1 devices", "what JAX sees", startup_line(info), ""))
    n = p["matmul"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: a @ b)
    for _ in range(3):
        mm(a, b).block_until_ready()
    iters = 10
    t = time.perf_counter()
    for _ in range(iters):
        out = mm(a, b)
    out.block_until_ready()
    peak = 2 * n**3 * iters / (time.perf_counter() - t)
    rows.append(("1 devices", f"peak bf16 matmul {n}^3 (measured)", f"{peak / 1e12:.1f} TFLOP/s",
                 "MFU denominator below"))
    return peak


# ----------------------------------------------------------------------------- 2. training

def _bench_train_module():
    spec = importlib.util.spec_from_file_location("bench_train", REPO / "scripts" / "bench_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _micro(config, fields: dict):
    """The config with a smaller model (smoke mode: 8 feature channels); the rest as loaded."""
    from ctsearcher_jax import config as config_lib

    d = config_lib.to_dict(config)
    for key, value in fields.items():
        section = "eval" if key == "min_length" else "model"
        d[section][key] = value
    d["model"]["feature_dim"] = 8
    return config_lib.from_dict(d)


def section_train(p: dict, rows: list, peak: float, budget: float) -> None:
    bt = _bench_train_module()
    name = p["train_config"]
    for dtype in p["train_dtypes"]:
        results = {}
        for batch in p["batches"]:
            if batch != p["batches"][0] and elapsed() > budget:
                rows.append(("2 train", f"{name} {dtype} batch {batch}", "skipped", "time budget"))
                break
            try:
                config = bt.load_config(name, dtype, False, batch)
                if p.get("micro_model"):
                    config = _micro(config, p["micro_model"])
                r = bt.bench_jax(config, 2, p["steps"])
            except Exception as exc:  # noqa: BLE001 - out of memory ends the sweep
                rows.append(("2 train", f"{name} {dtype} batch {batch}", "failed",
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"))
                break
            results[batch] = r
            print(f"  train {name} {dtype} batch {batch}: {r['step_s'] * 1e3:.1f} ms/step, "
                  f"{r['flops'] / 1e9:.1f} GFLOP, compile {r['compile_s']:.1f} s", flush=True)
        if not results:
            continue
        best = max(results, key=lambda b: b / results[b]["step_s"])
        for label, batch in (("batch 2", p["batches"][0]), (f"best batch ({best})", best)):
            if label != "batch 2" and best == p["batches"][0] and len(results) == 1:
                continue
            r = results[batch]
            mfu = r["flops"] / r["step_s"] / peak
            rows.append(("2 train", f"{name} {dtype} {label} x 2 readers",
                         f"{r['step_s'] * 1e3:.1f} ms/step, {batch / r['step_s']:.2f} CTs/s, "
                         f"MFU {100 * mfu:.1f} %",
                         f"{r['flops'] / 1e9:.1f} GFLOP/step (XLA), compile {r['compile_s']:.0f} s"))


# ----------------------------------------------------------------------------- 3. Swin UNETR

def synthetic_volume(shape, seed: int = 0) -> np.ndarray:
    """A smooth float32 volume in [0, 1] (HU-scaled-like), cheap to make."""
    rng = np.random.default_rng(seed)
    coarse = rng.random(tuple(max(2, s // 16) for s in shape), dtype=np.float32)
    reps = [-(-s // c) for s, c in zip(shape, coarse.shape)]
    vol = np.kron(coarse, np.ones(reps, np.float32))[: shape[0], : shape[1], : shape[2]]
    return np.clip(vol + 0.05 * rng.standard_normal(shape, dtype=np.float32), 0, 1)


def worker_ours(dtype: str, p: dict, save: str | None) -> dict:
    from ctsearcher_jax.config import ExtractConfig
    from feature_extraction.extract import build_extractor
    from feature_extraction.sliding_window import pad_volume, plan_windows

    cfg = ExtractConfig(feature_size=p["fs"], roi=p["roi"], dtype=dtype, batch=p["swin_batch"])
    ext = build_extractor("random", cfg, seed=0)
    plan = plan_windows(p["shape"], p["roi"], 0.0)
    vol = pad_volume(synthetic_volume(p["shape"]), plan)
    ext.warmup()  # ahead-of-time compilation of the encoder
    compile_s = ext.compile_seconds
    ext.encoder.encode_volume(vol, plan.starts[:1])  # the window cutter for this volume shape
    times = []
    for _ in range(p["repeats"]):
        t = time.perf_counter()
        dec4, _ = ext.encoder.encode_volume(vol, plan.starts)
        times.append(time.perf_counter() - t)
    if save:
        np.save(save, dec4)
    from ctsearcher_jax.nn.attention import last_used

    mem, kind = jax_peak_mib()
    return {"windows": plan.num_windows, "seconds": min(times), "compile_s": compile_s,
            "peak_mib": mem, "mem_kind": kind, "attention": last_used.get("swin_window", "?")}


def worker_monai(amp: bool, p: dict) -> dict:
    import torch
    from monai.networks.nets import SwinUNETR

    from feature_extraction.sliding_window import pad_volume, plan_windows

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    model = SwinUNETR(in_channels=1, out_channels=14, feature_size=p["fs"]).eval().to(dev)
    r, b = p.get("monai_roi", p["roi"]), p["swin_batch"]
    shape = tuple(p.get("monai_shape", p["shape"]))
    plan = plan_windows(shape, r, 0.0)
    vol = torch.from_numpy(pad_volume(synthetic_volume(shape), plan)).to(dev)

    def run(starts):
        outs = []
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16 if cuda
                                                     else torch.bfloat16, enabled=amp):
            for i in range(0, len(starts), b):
                x = torch.stack([vol[s0:s0 + r, s1:s1 + r, s2:s2 + r]
                                 for s0, s1, s2 in starts[i:i + b]])[:, None]
                hs = model.swinViT(x, model.normalize)
                outs.append(model.encoder10(hs[4]).float().cpu())
        if cuda:
            torch.cuda.synchronize()
        return outs

    if p["repeats"] > 1:
        run(plan.starts[:b])  # warm-up (cuDNN autotune, allocator)
    times = []
    for _ in range(p["repeats"]):
        t = time.perf_counter()
        run(plan.starts)
        times.append(time.perf_counter() - t)
    mem = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib()
    return {"windows": plan.num_windows, "seconds": min(times), "compile_s": 0.0,
            "peak_mib": mem, "mem_kind": "device" if cuda else "RSS"}


def run_worker(kind: str, arg: str, p: dict, isolate: bool, save: str | None = None) -> dict:
    if not isolate:
        return worker_ours(arg, p, save) if kind == "ours" else worker_monai(arg == "amp", p)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, __file__, "--worker", kind, arg, "--params", json.dumps(p)]
    if save:
        cmd += ["--save", save]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_swin(p: dict, rows: list, isolate: bool, tmp: Path) -> None:
    shape = "x".join(map(str, p["shape"]))
    results = {}
    for label, kind, arg in (("ours float32", "ours", "float32"), ("ours bfloat16", "ours", "bfloat16"),
                             ("MONAI float32", "monai", "fp32"), ("MONAI AMP (fp16)", "monai", "amp")):
        save = str(tmp / f"dec4_{arg}.npy") if kind == "ours" else None
        try:
            r = run_worker(kind, arg, p, isolate, save)
        except ImportError as exc:
            rows.append(("3 swin", f"{label} fs{p['fs']} {shape}", "not run",
                         f"missing package ({exc.name}): carry wheels (scripts/bench_wheelhouse.sh)"))
            continue
        except Exception as exc:  # noqa: BLE001 - one implementation failing must not hide the rest
            rows.append(("3 swin", f"{label} fs{p['fs']} {shape}", "failed", str(exc)[:100]))
            continue
        results[label] = r
        wps = r["windows"] / r["seconds"]
        note = f"{r['windows']} windows/volume, peak {r['mem_kind']} {r['peak_mib']:.0f} MiB"
        if kind == "ours":
            note += f", compile {r['compile_s']:.0f} s, attention {r.get('attention')}"
        what = shape if kind == "ours" else "x".join(map(str, p.get("monai_shape", p["shape"])))
        rows.append(("3 swin", f"{label} fs{p['fs']} {what}",
                     f"{wps:.2f} windows/s, {3600 * wps / r['windows']:.1f} volumes/h", note))
        print(f"  swin {label}: {wps:.2f} windows/s", flush=True)
    ours = results.get("ours bfloat16")
    same_work = p.get("monai_roi", p["roi"]) == p["roi"]
    for ref in ("MONAI float32", "MONAI AMP (fp16)"):
        if ours and ref in results and same_work:
            ratio = results[ref]["seconds"] / ours["seconds"]
            rows.append(("3 swin", f"ours bfloat16 vs {ref}", f"{ratio:.2f}x windows/s", ""))
    a, b = tmp / "dec4_float32.npy", tmp / "dec4_bfloat16.npy"
    if a.is_file() and b.is_file():
        f32, b16 = np.load(a), np.load(b)
        err = float(np.abs(b16 - f32).max() / np.abs(f32).max())
        rows.append(("3 swin", "bf16 vs fp32 dec4 relative error", f"{err:.2e}",
                     "max |bf16 - fp32| / max |fp32|, same weights and volume"))


# ----------------------------------------------------------------------------- 4. end to end

def section_end_to_end(p: dict, rows: list, tmp: Path, isolate: bool) -> None:
    import nibabel as nib

    cts = tmp / "cts"
    cts.mkdir()
    hu = (synthetic_volume(p["shape"], seed=3) * 425 - 175).astype(np.int16)
    first = cts / "ct_000.nii.gz"
    nib.save(nib.Nifti1Image(hu, np.diag([0.8, 0.8, 2.5, 1.0])), str(first))
    for i in range(1, p["volumes"]):
        shutil.copyfile(first, cts / f"ct_{i:03d}.nii.gz")
    args = ["extract", "--ct-dir", str(cts), "--swin-weights", "random", "--feature-size", str(p["fs"]),
            "--dtype", "bfloat16", "--batch", str(p["swin_batch"]), "--no-progress",
            "--set", f"extract.roi={p['roi']}"]
    runs = []
    for attempt in range(2 if isolate else 1):
        summary = tmp / f"summary{attempt}.json"
        cmd = args + ["--out", str(tmp / "features"), "--summary-json", str(summary)]
        if attempt:
            cmd.append("--force")
        if isolate:
            env = dict(os.environ, CTSEARCHER_COMPILE_CACHE=str(tmp / "compile_cache"),
                       PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
            proc = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", *cmd], env=env,
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                rows.append(("4 extract", "ctsearcher extract", "failed",
                             (proc.stderr.strip().splitlines() or ["?"])[-1][:100]))
                return
        else:
            from ctsearcher_jax import cli

            if cli.main(cmd) != 0:
                rows.append(("4 extract", "ctsearcher extract", "failed", "see output"))
                return
        runs.append(json.loads(summary.read_text()))
    s = runs[-1]
    loop = s["seconds"] - s["compile_seconds"]
    rows.append(("4 extract", f"ctsearcher extract {p['volumes']} x {'x'.join(map(str, p['shape']))} "
                 f"bf16, {s['workers']} workers",
                 f"{3600 * len(s['processed']) / loop:.1f} volumes/h, device waited on input "
                 f"{100 * s['device_wait_fraction']:.1f} %",
                 f"{s['windows_per_second']:.2f} windows/s; first CT ready after "
                 f"{s['first_input_seconds']:.1f} s" + ("; DECODE-BOUND" if s["decode_bound"] else "")))
    if len(runs) == 2:
        rows.append(("4 extract", "compile: first run vs second run (persistent cache)",
                     f"{runs[0]['compile_seconds']:.1f} s vs {runs[1]['compile_seconds']:.1f} s", ""))


# ----------------------------------------------------------------------------- 5. reward

def section_reward(p: dict, rows: list) -> None:
    import jax
    import jax.numpy as jnp

    from ctsearcher_jax.metrics import scanmatch as sm

    group = sm.default_group_size()  # as the fine-tuning step chooses (the kernel too: "auto")
    kernel = ("native C++ kernel" if sm.choose_kernel(step=True).name == "native"
              else f"stripe kernel, group size {group or 'all'}")
    fn = jax.jit(lambda *a: sm.hmean_reward(*a, group_size=group))
    for b, k, length in p["reward_shapes"]:
        rng = np.random.default_rng(0)

        def scanpaths(*lead):
            coords = rng.uniform(0, 511, (*lead, length, 3)).astype(np.float32)
            durations = rng.lognormal(np.log(0.35), 0.5, (*lead, length)).astype(np.float32)
            n = rng.integers(length // 3, length + 1, lead).astype(np.int32)
            return jnp.asarray(coords), jnp.asarray(durations), jnp.asarray(n)

        args = (*scanpaths(b), *scanpaths(b, k))
        fn(*args).block_until_ready()  # compile
        times = call_seconds(lambda: fn(*args).block_until_ready(), 5)
        rows.append(("5 reward", f"hmean ScanMatch reward, {b} x {k} samples of <= {length} "
                     "fixations, float32", f"{1e3 * min(times):.1f} ms per call",
                     f"{kernel}; compare a section-2 step"))


# ----------------------------------------------------------------------------- 6. metrics

def section_metrics(p: dict, rows: list) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import bench_metrics

    from ctsearcher_jax.metrics import protocol
    from ctsearcher_jax.metrics import scanmatch as sm

    n, lo, hi = p["metrics_ct"]
    gt, pred = bench_metrics.make_ct(0, n_gt=n, n_pred=n, lo=lo, hi=hi)

    native = sm.choose_kernel().name == "native"  # the evaluation's choice: the host's CPU
    where = "host CPU, native kernel" if native else "stripe kernel"
    for align in ("dp", "exact"):
        times = call_seconds(lambda: protocol.all_pairs_protocol(  # cold (compiles), warm
            [gt], [pred], multimatch_alignment=align), 2)
        rows.append(("6 metrics", f"one CT, {n} x {n} pairs of {lo}-{hi} fixations, every metric, "
                     f"MultiMatch {align}", f"{times[1]:.2f} s warm",
                     f"cold {times[0]:.1f} s; ScanMatch on the {where}"))
    # ScanMatch alone by each kernel: the native one on the host's cores against the jnp stripe
    # kernel on this backend (64-pair chunks, whole-height stripes on accelerators).
    gts = [g for g in gt for _ in pred]
    preds = [q for _ in gt for q in pred]
    for kernel in ("native", "stripe") if native else ("stripe",):
        times = call_seconds(
            lambda: sm.scanmatch_batch(gts, preds, sm.WITH_DURATION, kernel=kernel), 2)
        rows.append(("6 metrics", f"ScanMatch with duration, the same {n * n} pairs, "
                     f"{kernel} kernel", f"{times[1]:.2f} s warm", f"cold {times[0]:.1f} s"))


# ----------------------------------------------------------------------------- main

def table(rows: list) -> str:
    lines = ["| section | measurement | result | notes |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (under 2 minutes)")
    parser.add_argument("--out", default="bench_accelerator.md", help="where the table is written")
    parser.add_argument("--sections", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--batches", nargs="+", type=int, help="training batch sweep (CTs)")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="skip further sweep points after this many seconds")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="run each Swin measurement and each extract in a fresh process "
                             "(default: on, off with --smoke)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:  # one isolated Swin measurement; prints its result as the last JSON line
        p = json.loads(args.params)
        p["shape"] = tuple(p["shape"])
        kind, arg = args.worker
        r = worker_ours(arg, p, args.save) if kind == "ours" else worker_monai(arg == "amp", p)
        print(json.dumps(r))
        return 0

    p = dict(SMOKE if args.smoke else FULL)
    if args.batches:
        p["batches"] = args.batches
    isolate = (not args.smoke) if args.isolate is None else args.isolate
    from ctsearcher_jax.runtime import compile_cache

    # The user's persistent compilation cache (CTSEARCHER_COMPILE_CACHE decides), so a rerun of
    # the bench in the same lease skips compilation; section 4 measures the cache with its own.
    compile_cache.configure()
    rows: list = []
    peak = float("nan")
    with tempfile.TemporaryDirectory(prefix="bench_accel_") as tmp:
        tmp = Path(tmp)
        sections = {
            1: lambda: section_devices(p, rows),
            # the sweep gets a share of the budget: sections 3 and 4 need the rest
            2: lambda: section_train(p, rows, peak, 0.45 * args.budget_s),
            3: lambda: section_swin(p, rows, isolate, tmp),
            4: lambda: section_end_to_end(p, rows, tmp, isolate),
            5: lambda: section_reward(p, rows),
            6: lambda: section_metrics(p, rows),
        }
        for n in sorted(set(args.sections)):
            if n == 2 and not np.isfinite(peak):
                peak = section_devices(p, [])  # MFU needs the measured peak
            print(f"section {n} ({elapsed():.0f} s wall, {time.process_time():.0f} s CPU)", flush=True)
            try:
                out = sections[n]()
            except ImportError as exc:
                rows.append((f"{n}", "section", "not run", f"missing package ({exc.name}): carry "
                             "wheels (scripts/bench_wheelhouse.sh)"))
                continue
            if n == 1:
                peak = out
    rows.append(("-", "bench wall time", f"{elapsed():.0f} s", "smoke" if args.smoke else ""))
    text = table(rows)
    print()
    print(text, end="")
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
