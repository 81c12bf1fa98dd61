"""Benchmark the full training step: steps/s, CTs/s and MFU, shared-forward vs per-reader mode.

    python scripts/bench_train.py                               # tiny + paper, all local devices
    python scripts/bench_train.py --configs tiny --steps 20 --batch 8
    python scripts/bench_train.py --dtype bfloat16              # model.compute_dtype
    python scripts/bench_train.py --upstream-src /path/to/CTScanGaze/src   # + the PyTorch original

What is timed is `ctsearcher_jax.train.step.make_train_step` exactly as training runs it: the
jitted step with donated state (forward, loss over every reader, backward, global-norm, AdamW),
on a (data, fsdp) mesh over every device present, with the global batch placed by
`make_array_from_process_local_data`. Batches are random tokens and targets of the config's shapes
(R readers per CT, 2 as in CT-ScanGaze), made once, so the input pipeline is not timed.

FLOPs per step come from XLA's cost analysis of the compiled step; MFU = FLOPs/s divided by the
devices' peak (dense bf16 for bfloat16 compute, dense fp32/TF32-free for float32) where the device
is known, "-" otherwise (CPUs). With --upstream-src the original PyTorch model is trained the
original's way (one forward per reader, AdamW) on the same shapes in the same run, float32 CPU,
and each JAX mode's speed-up over it is printed (per-reader = like for like; shared also saves
the repeated forwards).
Wall times on a shared machine are noisy: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctsearcher_jax import config as config_lib  # noqa: E402
from ctsearcher_jax.train import optimizer as opt_lib  # noqa: E402
from ctsearcher_jax.train import sharding as sh  # noqa: E402
from ctsearcher_jax.train import step as step_lib  # noqa: E402

# Dense peak FLOP/s per device: (float32, bfloat16). float32 = plain FP32 (no TF32).
PEAKS = {
    "H100": (67e12, 989e12), "H200": (67e12, 989e12), "A100": (19.5e12, 312e12),
    "L4": (30e12, 121e12), "V100": (15.7e12, 125e12),
    "TPU v4": (None, 275e12), "TPU v5 lite": (None, 197e12), "TPU v5e": (None, 197e12),
    "TPU v5p": (None, 459e12), "TPU v6 lite": (None, 918e12),
}


def peak_flops(device, dtype: str) -> float | None:
    kind = getattr(device, "device_kind", "")
    for name, (f32, bf16) in PEAKS.items():
        if name.lower() in kind.lower():
            return bf16 if dtype == "bfloat16" else f32
    return None


def load_config(name: str, dtype: str, per_reader: bool, batch: int) -> config_lib.Config:
    path = REPO / "configs" / f"{name}.yaml"
    config = config_lib.load(path) if path.is_file() else config_lib.Config()
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, compute_dtype=dtype),
        train=dataclasses.replace(config.train, batch_size=batch,
                                  share_forward_across_readers=not per_reader))


def random_batch(config: config_lib.Config, batch: int, readers: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    m = config.model
    length, k = m.max_length, m.num_classes
    n = rng.integers(1, length + 1, size=(batch, readers))
    steps = np.arange(length)
    cls = np.where(steps < n[..., None], rng.integers(1, k, size=(batch, readers, length)), 0)
    spatial = np.zeros((batch, readers, length, k), np.float32)
    np.put_along_axis(spatial, cls[..., None], 1.0, axis=-1)
    return {
        "tokens": rng.normal(size=(batch, m.num_tokens, m.feature_dim)).astype(np.float32),
        "spatial": spatial,
        "duration": rng.uniform(0.1, 1.0, (batch, readers, length)).astype(np.float32),
        "action_mask": (steps <= n[..., None]).astype(np.float32),
        "duration_mask": (steps < n[..., None]).astype(np.float32),
        "reader_mask": np.ones((batch, readers), np.float32),
        "ct_mask": np.ones((batch,), np.float32),
    }


def bench_jax(config: config_lib.Config, readers: int, steps: int) -> dict:
    mesh = sh.make_mesh(config.train)
    sh.check_batch_divides(config.train, mesh, jax.process_count())
    steps_per_epoch = 100
    tx = opt_lib.make_optimizer(config.train, steps_per_epoch)
    _, _, abstract = step_lib.init_train_state(config, tx)
    shardings = sh.state_shardings(mesh, abstract)
    graphdef, rng_state, state = step_lib.init_train_state(config, tx, mesh=mesh,
                                                           shardings=shardings)
    train_step = step_lib.make_train_step(graphdef, config.train,
                                          opt_lib.lr_schedule(config.train, steps_per_epoch),
                                          shardings, sh.replicated(mesh))
    batch = sh.global_batch(mesh, random_batch(config, config.train.batch_size, readers))
    start = time.perf_counter()
    compiled = train_step.lower(state, rng_state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    state, metrics = compiled(state, rng_state, batch)  # warm-up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, rng_state, batch)
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    return {"step_s": step_s, "flops": flops, "compile_s": compile_s,
            "loss": float(np.asarray(metrics["loss"].addressable_data(0)))}


def bench_torch(config: config_lib.Config, readers: int, steps: int, upstream_src: str) -> float:
    """Seconds per step of the original's training step (per-reader forward + AdamW), fp32 CPU."""
    import torch

    sys.path.insert(0, upstream_src)
    from models.ct_searcher import CTSearcher as TorchCTSearcher  # the original, run unmodified
    from models.loss import CrossEntropyLoss, MLPLogNormalDistribution

    m, t = config.model, config.train
    if m.feature_dim != 768 or tuple(m.grid) != (8, 8, 8):
        return float("nan")  # the original hard-codes 768 input channels and the 8x8x8 grid
    torch.manual_seed(0)
    model = TorchCTSearcher(d_model=m.d_model, nhead=m.num_heads,
                            num_encoder_layers=m.num_encoder_layers,
                            num_decoder_layers=m.num_decoder_layers,
                            dim_feedforward=m.dim_feedforward, dropout=m.dropout,
                            spatial_dim=m.grid, max_length=m.max_length, device="cpu")
    optim = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps,
                              weight_decay=t.weight_decay)
    b = random_batch(config, t.batch_size, readers)
    flat = lambda x: torch.from_numpy(x.reshape(t.batch_size * readers, *x.shape[2:]))  # noqa: E731
    tokens = torch.from_numpy(np.repeat(b["tokens"], readers, axis=0))
    spatial, dur = flat(b["spatial"]), flat(b["duration"])
    amask, dmask = flat(b["action_mask"]), flat(b["duration_mask"])

    def step():
        optim.zero_grad()
        out = model(tokens)
        loss = CrossEntropyLoss(out["spatial_logits"], spatial, amask) + \
            MLPLogNormalDistribution(out["duration_mu"], out["duration_sigma2"], dur, dmask)
        loss.backward()
        optim.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "paper"])
    parser.add_argument("--batch", type=int, default=None,
                        help="global batch (CTs); default: 2 x number of devices")
    parser.add_argument("--readers", type=int, default=2, help="readers per CT (CT-ScanGaze: 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--modes", nargs="+", default=["shared", "per-reader"],
                        choices=["shared", "per-reader"])
    parser.add_argument("--upstream-src", default=None, help="CTScanGaze src/ for the torch reference")
    args = parser.parse_args()

    devices = jax.devices()
    batch = args.batch or 2 * len(devices)
    peak = peak_flops(devices[0], args.dtype)
    print(f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}, {platform.processor() or platform.machine()}, "
          f"batch {batch} CTs x {args.readers} readers, compute {args.dtype}")
    header = (f"{'config':<8} {'mode':<11} {'step ms':>9} {'steps/s':>8} {'CTs/s':>8} "
              f"{'GFLOP/step':>11} {'MFU':>6} {'compile s':>9}")
    if args.upstream_src:
        header += f" {'torch ms':>9} {'speed-up':>8}"
    print(header)
    for name in args.configs:
        torch_s = None
        for per_reader in [mode == "per-reader" for mode in args.modes]:
            config = load_config(name, args.dtype, per_reader, batch)
            r = bench_jax(config, args.readers, args.steps)
            mfu = "-" if peak is None else f"{r['flops'] / r['step_s'] / (peak * len(devices)):.1%}"
            line = (f"{name:<8} {'per-reader' if per_reader else 'shared':<11} "
                    f"{r['step_s'] * 1e3:>9.1f} {1 / r['step_s']:>8.2f} "
                    f"{batch / r['step_s']:>8.1f} {r['flops'] / 1e9:>11.2f} {mfu:>6} "
                    f"{r['compile_s']:>9.1f}")
            if args.upstream_src:
                if torch_s is None:
                    torch_s = bench_torch(config, args.readers, args.steps, args.upstream_src)
                line += f" {torch_s * 1e3:>9.1f} {torch_s / r['step_s']:>7.2f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
