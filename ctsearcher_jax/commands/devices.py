"""`ctsearcher devices`: the backend, devices, processes and versions JAX sees on this machine."""

from __future__ import annotations

import argparse
import json

HELP = "show what JAX sees: backend, device kind and count, process index/count, JAX versions"


COMPILES = True  # it shows where the compilation cache is (or that it is off)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--require", choices=("cpu", "gpu", "tpu"),
                        help="exit 2 with the install command unless JAX's backend is this one "
                             "(what scripts/train_slurm.sh and train_tpu_pod.sh check; default: "
                             "any backend)")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.runtime import devices

    info = devices.require(args.require) if args.require else devices.describe()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(devices.startup_line(info))
    import jax

    for d in jax.local_devices():
        print(f"  local device {d.id}: {d.device_kind} ({d.platform})")
    from ctsearcher_jax.runtime import compile_cache

    cache = compile_cache.active_dir()
    print(f"compilation cache: {cache if cache else 'off'}")
    return 0
