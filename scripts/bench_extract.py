"""Benchmark: feature extraction of one synthetic CT, ours (JAX) against the original procedure.

The original procedure is CTScanGaze's `swin_unet_extract_feature.py` + `merge_features.py` as it
runs: MONAI `LoadImage` + `ScaleIntensityRange`, symmetric padding, `dense_patch_slices` windows,
the bundled `encode` (which also computes encoders 1-4, whose outputs are discarded) per batch of
4 windows, then the per-cell average. It runs with MONAI's `SwinUNETR` in PyTorch (random weights).
Ours is `feature_extraction.extract.extract_volume` (load, pad, cut on device, jit-compiled encode,
merge, atomic writes). Each side runs in its own subprocess so peak memory is its own.

    python scripts/bench_extract.py                       # 130x100x70 (4 windows), feature_size 48
    python scripts/bench_extract.py --size 512 512 128    # the realistic case: 72 windows

Prints a table: windows, seconds per volume (steady state; our compile time separately), windows/s,
volumes/hour at this size and projected for a 72-window (512x512x128) volume, peak host RSS (and
peak accelerator memory where JAX reports it), and the speed ratio ours / original.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_volume(path: Path, size: tuple[int, int, int], seed: int = 0) -> None:
    """A synthetic CT: smooth body-like HU values with noise, int16 + intercept like scanners write."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in size], indexing="ij")
    r2 = sum(g * g for g in grids)
    hu = np.where(r2 < 0.8, 40.0, -1000.0) + 200.0 * np.sin(6 * grids[0]) * (r2 < 0.8)
    hu = hu + rng.normal(0, 30, size)
    img = nib.Nifti1Image((hu + 1024).astype(np.int16), np.diag([0.7, 0.7, 2.5, 1.0]))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(path))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_ours(path: Path, args: argparse.Namespace) -> dict:
    import jax

    from ctsearcher_jax.config import ExtractConfig
    from ctsearcher_jax.runtime import allocator
    from feature_extraction.extract import extract_volume, get_extractor

    allocator.for_extraction()  # as `ctsearcher extract` does (CTSEARCHER_RETAIN_FREED_MEMORY=0: off)
    config = ExtractConfig(feature_size=args.feature_size, batch=args.batch, dtype=args.dtype)
    t0 = time.perf_counter()
    extractor = get_extractor("random", config)
    extractor.warmup()
    compile_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="bench_extract_ours_"))
    times, windows, encode_s = [], 0, []
    for _ in range(args.repeats):
        t = time.perf_counter()
        r = extract_volume(path, out, extractor=extractor, force=True)
        times.append(time.perf_counter() - t)
        windows, encode_s = r.windows, encode_s + [r.seconds]
    mem = {}
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            mem["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    except Exception:  # CPU backends report nothing
        pass
    return {"impl": f"ours (JAX {jax.default_backend()}, {config.dtype}, batch "
                    f"{extractor.encoder.batch})", "windows": windows, "volume_s": min(times),
            "encode_s": min(encode_s), "compile_s": compile_s, "rss_mb": peak_rss_mb(), **mem}


def run_original(path: Path, args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.networks.nets import SwinUNETR
    from monai.transforms import LoadImage, ScaleIntensityRange

    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=14, feature_size=args.feature_size).eval()
    roi = (96, 96, 96)

    def encode(x):  # the original's `encode`: SwinViT, encoders 1-4 (unused) and encoder10
        hidden = net.swinViT(x, net.normalize)
        net.encoder1(x), net.encoder2(hidden[0]), net.encoder3(hidden[1]), net.encoder4(hidden[2])
        return hidden[4], net.encoder10(hidden[4])

    def once() -> tuple[int, float]:
        img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
        img = ScaleIntensityRange(a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)(img)
        x = torch.as_tensor(img.numpy())[None]
        size = tuple(max(s, r) for s, r in zip(x.shape[2:], roi))
        pad = []
        for k in range(4, 1, -1):
            diff = max(roi[k - 2] - x.shape[k], 0)
            pad += [diff // 2, diff - diff // 2]
        x = F.pad(x, pad)
        slices = dense_patch_slices(size, roi, _get_scan_interval(size, roi, 3, (0.0,) * 3))
        saved, t_enc = [], time.perf_counter()
        with torch.no_grad():
            for b0 in range(0, len(slices), 4):
                batch = slices[b0:b0 + 4]
                win = torch.cat([x[(slice(0, 1), slice(None), *s)] for s in batch])
                h4, d4 = encode(win)
                saved.append((h4, d4, batch))
        t_enc = time.perf_counter() - t_enc
        dims = [s // 32 for s in size]
        c = saved[0][0].shape[1]
        dec4, hid = torch.zeros((c, *dims)), torch.zeros((c, *dims))
        count = torch.zeros([1, 1, *dims])
        for h4, d4, batch in saved:
            for hp, dp, s in zip(h4, d4, batch):
                cells = tuple(slice(a.start // 32, a.stop // 32) for a in s)
                hid[(slice(None), *cells)] += hp
                dec4[(slice(None), *cells)] += dp
                count[(slice(None), slice(None), *cells)] += 1
        count[count == 0] = 1
        (dec4 / count[0]).numpy(), (hid / count[0]).numpy()
        return len(slices), t_enc

    times, enc = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        windows, t_enc = once()
        times.append(time.perf_counter() - t)
        enc.append(t_enc)
    return {"impl": f"original (MONAI {__import__('monai').__version__}, PyTorch "
                    f"{torch.__version__}, {torch.get_num_threads()} threads, batch 4)",
            "windows": windows, "volume_s": min(times), "encode_s": min(enc), "compile_s": 0.0,
            "rss_mb": peak_rss_mb()}


def table(rows: list[dict], size: tuple[int, int, int], feature_size: int) -> str:
    lines = [f"extraction of one {size[0]}x{size[1]}x{size[2]} CT, feature_size {feature_size}",
             "| implementation | windows | s / volume | windows/s | volumes/h | volumes/h @72 win "
             "| compile s | peak RSS MB | peak device MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wps = r["windows"] / r["encode_s"]
        # A 72-window volume costs its encode time plus this volume's non-encode overhead.
        per72 = 72 / wps + (r["volume_s"] - r["encode_s"])
        lines.append(f"| {r['impl']} | {r['windows']} | {r['volume_s']:.2f} | {wps:.3f} | "
                     f"{3600 / r['volume_s']:.1f} | {3600 / per72:.1f} | {r['compile_s']:.1f} | "
                     f"{r['rss_mb']:.0f} | {r.get('device_peak_mb', float('nan')):.0f} |")
    if len(rows) == 2:
        ratio = rows[1]["volume_s"] / rows[0]["volume_s"]
        lines.append(f"\nspeed-up of ours over the original (volume time, steady state): {ratio:.2f}x")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=3, default=[130, 100, 70], metavar=("I", "J", "K"))
    p.add_argument("--feature-size", type=int, default=48)
    p.add_argument("--batch", type=int, default=4, help="our windows per device per step")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per side (best is reported)")
    p.add_argument("--skip-original", action="store_true")
    p.add_argument("--only", choices=("ours", "original"), help=argparse.SUPPRESS)
    p.add_argument("--volume", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.only:
        fn = run_ours if args.only == "ours" else run_original
        print("RESULT " + json.dumps(fn(Path(args.volume), args)))
        return

    size = tuple(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.nii.gz"
        write_volume(path, size)
        rows = []
        for side in ("ours",) + (() if args.skip_original else ("original",)):
            cmd = [sys.executable, __file__, "--only", side, "--volume", str(path),
                   "--feature-size", str(args.feature_size), "--batch", str(args.batch),
                   "--dtype", args.dtype, "--repeats", str(args.repeats)]
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
            if r.returncode != 0:
                sys.exit(f"{side} failed:\n{r.stderr[-3000:]}")
            rows.append(json.loads(r.stdout.split("RESULT ", 1)[1]))
            print(f"{side}: done ({rows[-1]['volume_s']:.1f} s / volume)", file=sys.stderr)
    print(table(rows, size, args.feature_size))


if __name__ == "__main__":
    main()
