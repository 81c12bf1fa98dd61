"""Benchmark Swin UNETR `encode` (SwinViT + encoder10) on 96^3 windows: ours (jit, warm) vs MONAI.

    python scripts/bench_swin.py [--batches 1 4] [--feature-size 48] [--repeats 3] [--dtype float32]

Both run the same random weights (MONAI's, converted), in the same process, on the same machine.
Prints a table: windows/s, the ours/MONAI speed ratio and peak memory. Every measurement runs in
a fresh subprocess so the peaks do not mix: process peak RSS on CPU, `peak_bytes_in_use` on an
accelerator (MONAI on CUDA: `torch.cuda.max_memory_allocated`). MONAI runs its current
PatchMerging order (the order does not change the cost).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (compile / allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def worker(args) -> dict:
    """Measure one implementation at one batch size in this (fresh) process."""
    import dataclasses

    import jax
    import torch
    from flax import nnx
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    from feature_extraction.convert_monai import convert_state_dict
    from feature_extraction.swin_unetr import SwinUNETR, encode_fn
    from feature_extraction.weights import set_params

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    tdev = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    monai = MonaiSwinUNETR(in_channels=1, out_channels=14, feature_size=args.feature_size).eval()
    b = args.batch
    x = np.random.default_rng(b).random((b, args.roi, args.roi, args.roi, 1), dtype=np.float32)
    info = {"jax": f"{jax.__version__} on {jax.devices()[0].device_kind}",
            "torch": f"{torch.__version__} on {tdev} ({torch.get_num_threads()} threads)"}
    if args.worker == "ours":
        sd = {k: v.detach().numpy() for k, v in monai.state_dict().items()}
        del monai
        config, _, params = convert_state_dict(sd, "fixed", "encoder")
        config = dataclasses.replace(config, dtype=args.dtype, precision=args.precision,
                                     attention_batch=args.attention_batch)
        model = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts="encoder"))
        set_params(model, params)
        graphdef, state = nnx.split(model)
        encode = jax.jit(functools.partial(encode_fn, graphdef))
        xj = jax.device_put(x)
        base = rss_mb()
        t0 = time.perf_counter()
        jax.block_until_ready(encode(state, xj))
        info["compile_s"] = time.perf_counter() - t0
        info["seconds"] = timed(lambda: jax.block_until_ready(encode(state, xj)), args.repeats)
        stats = jax.devices()[0].memory_stats() or {}
        info["peak_mib"] = stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else rss_mb()
    else:
        monai = monai.to(tdev)
        xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(tdev)

        def monai_encode():
            with torch.no_grad():
                hs = monai.swinViT(xt, True)
                d = monai.encoder10(hs[4])
            if cuda:
                torch.cuda.synchronize()
            return d

        base = rss_mb()
        info["seconds"] = timed(monai_encode, args.repeats)
        info["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mb()
    info["base_mib"] = base
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--feature-size", type=int, default=48)
    ap.add_argument("--roi", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--precision", default="highest", choices=["default", "high", "highest"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--attention-batch", type=int, default=1,
                    help="ours: samples whose windows attend at once (0 = whole batch; default 1)")
    ap.add_argument("--skip-monai", action="store_true", help="time ours only")
    ap.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0

    # Each measurement in a fresh process, so peak memory is that implementation's own.
    results = {}
    impls = ("ours",) if args.skip_monai else ("ours", "monai")
    for b in args.batches:
        for impl in impls:
            cmd = [sys.executable, __file__, "--worker", impl, "--batch", str(b),
                   "--feature-size", str(args.feature_size), "--roi", str(args.roi),
                   "--repeats", str(args.repeats), "--dtype", args.dtype,
                   "--precision", args.precision, "--threads", str(args.threads),
                   "--attention-batch", str(args.attention_batch)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[b, impl] = json.loads(next(ln for ln in out.splitlines()
                                               if ln.startswith("RESULT "))[7:])
    first = results[args.batches[0], "ours"]
    print(f"jax {first['jax']}; torch {first['torch']}; "
          f"feature_size {args.feature_size}, {args.roi}^3 windows, encode = SwinViT + encoder10; "
          f"ours dtype {args.dtype}, precision {args.precision}, attention_batch "
          f"{args.attention_batch}; best of {args.repeats} after warm-up")
    print()
    print("| batch | ours windows/s | MONAI windows/s | ratio (ours/MONAI speed) | ours peak MiB | "
          "MONAI peak MiB | ours compile s |")
    print("|---|---|---|---|---|---|---|")
    for b in args.batches:
        o = results[b, "ours"]
        t = results.get((b, "monai"), {"seconds": float("nan"), "peak_mib": float("nan")})
        print(f"| {b} | {b / o['seconds']:.3f} | {b / t['seconds']:.3f} | "
              f"{t['seconds'] / o['seconds']:.2f}x | {o['peak_mib']:.0f} | {t['peak_mib']:.0f} | "
              f"{o['compile_s']:.1f} |")
    print("\npeak MiB: accelerator peak_bytes_in_use / torch.cuda.max_memory_allocated; on CPU the "
          "process's peak RSS (fresh process per row, libraries and weights included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
