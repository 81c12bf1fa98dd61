"""Sampling cost of CT-Searcher AR against CT-Searcher at one config (issue 26: at most 3x).

    python scripts/bench_sampling.py [--config paper] [--num-cts 16] [--samples 10]
                                     [--ar-layers 1] [--repeats 2] [--set KEY=VALUE ...]

Builds both architectures from the same config (random weights: the cost of a draw does not
depend on them, the AR scan always runs max_length steps) and draws `--samples` scanpaths for
each of `--num-cts` CTs of random feature tokens, in chunks of `model.generate.CHUNK` CTs with one key
per CT, exactly as `predict` does (`generate.samplers(config).per_ct`), on the default device.
Times the warm calls (the first compiles) and prints seconds per call, per CT and per scanpath
and the ratio AR / CT-Searcher. Wall time is measured here, on whatever machine runs it: compare
ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctsearcher_jax import config as config_lib  # noqa: E402
from ctsearcher_jax.model.factory import build  # noqa: E402
from ctsearcher_jax.model.generate import CHUNK, samplers  # noqa: E402


def time_sampling(config: config_lib.Config, cts: int, samples: int, repeats: int) -> list[float]:
    """Seconds of each call drawing `samples` scanpaths for each of `cts` CTs (first: compile)."""
    model = build(config.model, nnx.Rngs(0))
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(cts, config.model.num_tokens, config.model.feature_dim)).astype(np.float32)
    base = jax.random.key(0)
    draw = samplers(config).per_ct
    seconds = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        for start in range(0, cts, CHUNK):
            chunk = tokens[start:start + CHUNK]
            keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.arange(start, start + len(chunk)))
            out = draw(model, chunk, keys, num_samples=samples, min_length=config.eval.min_length,
                       frame=config.data.frame, z_extent=float(config.data.frame))
            jax.block_until_ready(out)
        seconds.append(time.perf_counter() - t)
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="paper")
    p.add_argument("--num-cts", type=int, default=16)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--ar-layers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    base = config_lib.load(args.config, args.set)
    ar = dataclasses.replace(base, model=dataclasses.replace(base.model, arch="ct_searcher_ar",
                                                             ar_layers=args.ar_layers))
    m = base.model
    print(f"{args.config}: d_model {m.d_model}, {m.num_encoder_layers}+{m.num_decoder_layers} "
          f"layers, grid {list(m.grid)}, max_length {m.max_length}; {args.num_cts} CTs x "
          f"{args.samples} scanpaths, chunks of {CHUNK} CTs; {jax.device_count()} "
          f"{jax.default_backend()} device(s); AR ar_layers {args.ar_layers}", flush=True)
    rows = {}
    for name, config in (("ct_searcher", base), ("ct_searcher_ar", ar)):
        seconds = time_sampling(config, args.num_cts, args.samples, args.repeats)
        rows[name] = min(seconds[1:])
        print(f"{name}: first call {seconds[0]:.1f} s (compiles), warm {', '.join(f'{s:.2f}' for s in seconds[1:])} s",
              flush=True)
    n = args.num_cts * args.samples
    print("\n| model | warm s (best) | s per CT | ms per scanpath |\n|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s:.2f} | {s / args.num_cts:.3f} | {1e3 * s / n:.1f} |")
    ratio = rows["ct_searcher_ar"] / rows["ct_searcher"]
    print(f"\nAR / CT-Searcher sampling cost: {ratio:.2f}x ({'within' if ratio <= 3 else 'ABOVE'} "
          f"the 3x bar)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
