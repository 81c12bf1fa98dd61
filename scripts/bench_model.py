"""Benchmark CT-Searcher: forward and forward+backward time per CT, shared vs per-reader forward.

    python scripts/bench_model.py                       # tiny + paper configs, 2 and 10 readers
    python scripts/bench_model.py --configs tiny --iters 20
    python scripts/bench_model.py --upstream-src /path/to/CTScanGaze/src   # + the PyTorch original

For each config and reader count R it times, per CT (B CTs per batch):
  * forward: one jitted eval forward (the sampler's cost; independent of R when shared);
  * train shared: loss + gradients with one forward per CT and the loss over its R readers;
  * train per-reader: the same with the forward repeated per reader (the original's batches).
FLOPs come from XLA's cost analysis of the compiled function; GFLOP/s = FLOPs / time.
With --upstream-src, the original PyTorch model (its per-reader training step, float32, same shapes)
is timed in the same run and the JAX speed-up over it is printed.
Wall times on a shared machine are noisy: take the ratios, not the absolute numbers, as the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctsearcher_jax import config as config_lib  # noqa: E402
from ctsearcher_jax.config import ModelConfig  # noqa: E402
from ctsearcher_jax.data.targets import ScanpathTargets  # noqa: E402
from ctsearcher_jax.model.factory import build  # noqa: E402
from ctsearcher_jax.model.losses import repeat_for_readers, scanpath_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_FALLBACK = ModelConfig(d_model=32, num_heads=4, num_encoder_layers=1, num_decoder_layers=1,
                            dim_feedforward=64, feature_dim=192, grid=(4, 4, 4), max_length=32)


def model_config(name: str) -> ModelConfig:
    if name == "reference-small":  # the model of tests/fixtures/model (the original can run it too)
        return ModelConfig(d_model=48, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=64, dropout=0.0, feature_dim=768, grid=(8, 8, 8), max_length=16)
    path = REPO / "configs" / f"{name}.yaml"
    if path.is_file():
        return config_lib.load(path).model
    return ModelConfig() if name == "paper" else TINY_FALLBACK


def random_targets(rng: np.random.Generator, b: int, r: int, config: ModelConfig) -> tuple:
    length, k = config.max_length, config.num_classes
    n = rng.integers(1, length + 1, size=(b, r))
    steps = np.arange(length)
    cls = np.where(steps < n[..., None], rng.integers(1, k, size=(b, r, length)), 0)
    spatial = np.eye(k, dtype=np.float32)[cls]
    targets = ScanpathTargets(jnp.asarray(spatial),
                              jnp.asarray(rng.uniform(0.1, 1.0, (b, r, length)), jnp.float32),
                              jnp.asarray(steps <= n[..., None], jnp.float32),
                              jnp.asarray(steps < n[..., None], jnp.float32))
    return targets, jnp.ones((b, r), jnp.float32)


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def timed(fn, args, iters: int) -> float:
    """Seconds per call (median of `iters`; one warm-up call first when iters > 1)."""
    if iters > 1:
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_jax(config: ModelConfig, readers: int, batch: int, iters: int) -> dict:
    rng = np.random.default_rng(0)
    model = build(config, nnx.Rngs(params=0, dropout=1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jnp.asarray(rng.normal(size=(batch, config.num_tokens, config.feature_dim)), jnp.float32)
    targets, reader_mask = random_targets(rng, batch, readers, config)

    def forward(params, rest, tokens):
        return nnx.merge(graphdef, params, rest)(tokens, deterministic=True)

    def train(params, rest, tokens, shared: bool):
        def loss_fn(m):
            x = tokens if shared else repeat_for_readers(tokens, readers)
            return scanpath_loss(m(x, deterministic=False), targets, reader_mask, duration_weight=1.0,
                                 share_forward=shared)[0]
        # nnx.value_and_grad differentiates the Params and lets dropout advance its RNG state.
        return nnx.value_and_grad(loss_fn)(nnx.merge(graphdef, params, rest))

    out = {}
    fwd = jax.jit(forward).lower(params, rest, tokens).compile()
    out["fwd_s"] = timed(fwd, (params, rest, tokens), iters) / batch
    out["fwd_gflop"] = flops_of(fwd) / batch / 1e9
    for mode, shared in (("shared", True), ("per_reader", False)):
        step = jax.jit(train, static_argnums=3).lower(params, rest, tokens, shared).compile()
        out[f"{mode}_s"] = timed(step, (params, rest, tokens), iters) / batch
        out[f"{mode}_gflop"] = flops_of(step) / batch / 1e9
    return out


def bench_torch(config: ModelConfig, readers: int, batch: int, iters: int, upstream_src: str) -> float:
    """Seconds per CT of the original's per-reader training step (forward + backward), float32 CPU."""
    import torch

    sys.path.insert(0, upstream_src)
    from models.ct_searcher import CTSearcher as TorchCTSearcher  # the original, run unmodified
    from models.loss import CrossEntropyLoss, MLPLogNormalDistribution

    if config.feature_dim != 768 or config.grid != (8, 8, 8):
        return float("nan")  # the original hard-codes 768 input channels and the 8x8x8 grid
    torch.manual_seed(0)
    model = TorchCTSearcher(d_model=config.d_model, nhead=config.num_heads,
                            num_encoder_layers=config.num_encoder_layers,
                            num_decoder_layers=config.num_decoder_layers,
                            dim_feedforward=config.dim_feedforward, dropout=config.dropout,
                            spatial_dim=config.grid, max_length=config.max_length, device="cpu")
    rng = np.random.default_rng(0)
    tokens = torch.from_numpy(rng.normal(size=(batch * readers, config.num_tokens, 768)).astype(np.float32))
    targets, _ = random_targets(rng, batch, readers, config)
    spatial = torch.from_numpy(np.asarray(targets.spatial).reshape(batch * readers, config.max_length, -1))
    dur = torch.from_numpy(np.asarray(targets.duration).reshape(batch * readers, -1))
    amask = torch.from_numpy(np.asarray(targets.action_mask).reshape(batch * readers, -1))
    dmask = torch.from_numpy(np.asarray(targets.duration_mask).reshape(batch * readers, -1))

    def step():
        model.zero_grad()
        out = model(tokens)
        loss = CrossEntropyLoss(out["spatial_logits"], spatial, amask) + \
            MLPLogNormalDistribution(out["duration_mu"], out["duration_sigma2"], dur, dmask)
        loss.backward()

    if iters > 1:
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "reference-small", "paper"],
                        help="tiny / paper (configs/*.yaml) or reference-small (d 48, the parity model)")
    parser.add_argument("--readers", nargs="+", type=int, default=[2, 10])
    parser.add_argument("--batch", type=int, default=2, help="CTs per batch")
    parser.add_argument("--paper-batch", type=int, default=1, help="CTs per batch for paper")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    parser.add_argument("--paper-iters", type=int, default=1, help="timed iterations for paper")
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--upstream-src", default=None,
                        help="the original repository's src/ folder: also time its training step")
    args = parser.parse_args()

    print(f"# devices: {jax.devices()} ({platform.processor() or platform.machine()}), jax {jax.__version__}")
    header = ("| config | readers | forward ms/CT | fwd GFLOP/CT | fwd GFLOP/s | train shared ms/CT "
              "| train per-reader ms/CT | per-reader / shared | shared GFLOP/s | per-reader GFLOP/s |")
    if args.upstream_src:
        header += " torch original per-reader ms/CT | JAX shared speed-up vs torch |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name in args.configs:
        config = dataclasses.replace(model_config(name), compute_dtype=args.compute_dtype)
        iters = args.paper_iters if name == "paper" else args.iters
        batch = args.paper_batch if name == "paper" else args.batch
        for readers in args.readers:
            r = bench_jax(config, readers, batch, iters)
            row = (f"| {name} | {readers} | {1e3 * r['fwd_s']:.1f} | {r['fwd_gflop']:.3g} | "
                   f"{r['fwd_gflop'] / r['fwd_s']:.1f} | {1e3 * r['shared_s']:.1f} | "
                   f"{1e3 * r['per_reader_s']:.1f} | {r['per_reader_s'] / r['shared_s']:.2f}x | "
                   f"{r['shared_gflop'] / r['shared_s']:.1f} | {r['per_reader_gflop'] / r['per_reader_s']:.1f} |")
            if args.upstream_src:
                t = bench_torch(config, readers, batch, iters, args.upstream_src)
                row += f" {1e3 * t:.1f} | {t / r['shared_s']:.2f}x |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
