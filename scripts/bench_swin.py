"""Benchmark Swin UNETR `encode` (SwinViT + encoder10) on 96^3 windows: ours (jit, warm) vs MONAI.

    python scripts/bench_swin.py [--batches 1 4] [--feature-size 48] [--repeats 3] [--dtype float32]

Both run the same random weights (MONAI's, converted), in the same process, on the same machine.
Prints a table: windows/s, ours/MONAI ratio and peak memory (process max RSS growth on CPU,
`peak_bytes_in_use` on an accelerator; MONAI on CUDA: `torch.cuda.max_memory_allocated`).
MONAI runs in legacy-free current form (the merging order does not change the cost).
"""

from __future__ import annotations

import argparse
import functools
import resource
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--feature-size", type=int, default=48)
    ap.add_argument("--roi", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--precision", default="highest", choices=["default", "high", "highest"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--skip-monai", action="store_true")
    args = ap.parse_args()

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
    monai = MonaiSwinUNETR(in_channels=1, out_channels=14, feature_size=args.feature_size).eval().to(tdev)
    sd = {k: v.detach().cpu().numpy() for k, v in monai.state_dict().items()}
    import dataclasses
    config, _, params = convert_state_dict(sd, "fixed", "encoder")
    config = dataclasses.replace(config, dtype=args.dtype, precision=args.precision)
    model = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts="encoder"))
    set_params(model, params)
    graphdef, state = nnx.split(model)
    encode = jax.jit(functools.partial(encode_fn, graphdef))
    dev = jax.devices()[0]
    print(f"jax {jax.__version__} on {dev.device_kind} ({dev.platform}); torch {torch.__version__} on "
          f"{tdev} ({torch.get_num_threads()} threads); feature_size {args.feature_size}, "
          f"{args.roi}^3 windows, ours dtype {args.dtype}, precision {args.precision}")

    rows = []
    for b in args.batches:
        x = np.random.default_rng(b).random((b, args.roi, args.roi, args.roi, 1), dtype=np.float32)
        xj = jax.device_put(x)
        before = rss_mb()
        t0 = time.perf_counter()
        jax.block_until_ready(encode(state, xj))
        compile_s = time.perf_counter() - t0
        ours = timed(lambda: jax.block_until_ready(encode(state, xj)), args.repeats)
        stats = dev.memory_stats() or {}
        ours_mem = (stats.get("peak_bytes_in_use", 0) / 2**20) if stats else rss_mb() - before
        theirs, theirs_mem = float("nan"), float("nan")
        if not args.skip_monai:
            xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(tdev)

            def monai_encode():
                with torch.no_grad():
                    hs = monai.swinViT(xt, True)
                    d = monai.encoder10(hs[4])
                if cuda:
                    torch.cuda.synchronize()
                return d

            before = rss_mb()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            theirs = timed(monai_encode, args.repeats)
            theirs_mem = (torch.cuda.max_memory_allocated() / 2**20) if cuda else rss_mb() - before
        rows.append((b, b / ours, b / theirs, theirs / ours, ours_mem, theirs_mem, compile_s))

    print()
    print("| batch | ours windows/s | MONAI windows/s | speed-up (ours/MONAI) | ours peak MiB | "
          "MONAI peak MiB | ours compile s |")
    print("|---|---|---|---|---|---|---|")
    for b, o, t, r, om, tm, c in rows:
        print(f"| {b} | {o:.3f} | {t:.3f} | {r:.2f}x | {om:.0f} | {tm:.0f} | {c:.1f} |")
    print("\npeak memory on CPU = growth of the process's max RSS during that measurement "
          "(a lower bound; 0 when an earlier step already reached it).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
