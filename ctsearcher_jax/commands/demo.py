"""`ctsearcher demo`: the whole pipeline on the embedded synthetic dataset, on a CPU.

Each stage is the real command, run in this process (so compiled functions are shared) and
printed as the command line a user would type:

  synth -> validate-data -> extract (a small random-initialised Swin UNETR, labelled so)
  -> train (the bundled tiny config, configs/tiny.yaml; the checkpoint is chosen on a validation
  split carved from the training CTs) -> predict (test split) -> baselines -> evaluate (the
  model and the baselines alike, once, on the test split) -> report

`-q`/`-v` and `--debug` given to `demo` hold in every stage (`cli.main(argv, parent=args)`).
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

HELP = "run the whole pipeline on a small synthetic dataset and print where everything is"

BASELINES = ("uniform", "centre", "drilling", "human")


COMPILES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import alias

    parser.add_argument("--out", default="runs/demo", metavar="PATH",
                        help="run folder: data/, features/, run/ (with the report)")
    cts = parser.add_argument("--num-cts", type=int, default=8, metavar="N",
                              help="synthetic CTs")
    alias(parser, "--cts", cts)
    readers = parser.add_argument("--num-readers", type=int, default=2, metavar="N",
                                  help="readers per CT")
    alias(parser, "--readers", readers)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 48), metavar=("I", "J", "K"),
                        help="voxels per synthetic volume")
    parser.add_argument("--epochs", type=int, default=30, metavar="N", help="training epochs")
    parser.add_argument("--seed", type=int, default=0, metavar="SEED",
                        help="seed of data, model and sampling")
    parser.add_argument("--config", default="tiny", metavar="CONFIG",
                        help="model/training config: a YAML file or a bundled name")
    parser.add_argument("--force", action="store_true",
                        help="replace the demo's previous output in --out")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.config import resolve_path
    from ctsearcher_jax.errors import DataError
    from ctsearcher_jax.paths import check_output_dir
    from ctsearcher_jax.runtime.folder_lock import LOCK_NAME, locked

    out = check_output_dir(args.out)
    data, features, workdir = out / "data", out / "features", out / "run"
    config = resolve_path(args.config)
    with locked(out, command="demo"):  # each stage also locks the folder it writes
        existing = [p for p in out.iterdir() if p.name != LOCK_NAME]
        if existing:
            if not args.force:
                raise DataError(f"{out} already exists; pass --force to replace the demo run or "
                                "choose another --out")
            others = sorted(p.name for p in existing if p.name not in ("data", "features", "run"))
            if others:  # --force replaces a demo's output, never a folder that holds other things
                raise DataError(f"{out} holds {others[:3]}, which a demo does not write; --force "
                                f"replaces only a previous demo run: choose another --out")
            import shutil

            for p in existing:  # all but the lock this run holds
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return _run_stages(args, out, data, features, workdir, config)


def _run_stages(args: argparse.Namespace, out: Path, data: Path, features: Path, workdir: Path,
                config: Path) -> int:
    from ctsearcher_jax import cli
    from ctsearcher_jax.errors import DataError

    seed = str(args.seed)
    common = ["--set", f"data.data_dir={data}", "--set", f"data.feature_dir={features}"]
    stages: list[tuple[str, list[str]]] = [
        ("synthesise a CT-ScanGaze-format dataset",
         ["synth", "--out", str(data), "--num-cts", str(args.num_cts), "--num-readers",
          str(args.num_readers),
          "--seed", seed, "--shape", *map(str, args.shape), "--min-fixations", "20",
          "--max-fixations", "60"]),
        ("validate it", ["validate-data", str(data)]),
        ("extract Swin UNETR features (random-initialised encoder: no pretrained weights ship "
         "with the demo)",
         ["extract", "--ct-dir", str(data / "cts"), "--swin-weights", "random", "--out",
          str(features),
          "--config", str(config), "--seed", seed, "--no-progress"]),
        ("train CT-Searcher (tiny config; checkpoints chosen on a validation split carved from "
         "the training CTs)",
         ["train", "--config", str(config), "--workdir", str(workdir), *common,
          "--set", f"train.epochs={args.epochs}", "--set", f"train.seed={seed}"]),
        ("predict scanpaths for the test CTs (one per reader), once, with the exported model",
         ["predict", "--data", str(data), "--split", "test", "--model", str(workdir),
          "--features", str(features), "--out", str(workdir / "predictions"), "--seed", seed,
          "--max-figure-cts", "2"]),
        ("baselines for the same CTs",
         ["baselines", "--data", str(data), "--out", str(workdir / "baselines"), "--split", "test",
          "--seed", seed, "--baseline", *BASELINES]),
        ("score the model on the test split", _evaluate(workdir / "predictions" / "predictions.json", data,
                                      workdir / "evaluation" / "model.json")),
    ]
    for name in BASELINES:
        stages.append((f"score the {name} baseline",
                       _evaluate(workdir / "baselines" / f"{name}.json", data,
                                 workdir / "evaluation" / f"{name}.json")))
    stages.append(("write the report", ["report", "--workdir", str(workdir),
                                        "--title", "ctsearcher demo (synthetic data)"]))

    t0 = time.perf_counter()
    for i, (what, argv) in enumerate(stages, 1):
        print(f"\n[{i}/{len(stages)}] {what}\n$ ctsearcher {shlex.join(argv)}", flush=True)
        t = time.perf_counter()
        rc = cli.main(argv, parent=args)
        if rc != 0:
            raise DataError(f"demo stage {i} (`ctsearcher {argv[0]}`) exited with {rc}; see above")
        print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    print(f"  dataset:     {data}")
    print(f"  features:    {features}")
    print(f"  run:         {workdir}  (tensorboard --logdir {workdir / 'tb'})")
    print(f"  predictions: {workdir / 'predictions' / 'predictions.json'}")
    print(f"  report:      {workdir / 'report' / 'report.html'}")
    return 0


def _evaluate(pred: Path, data: Path, out: Path) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--data", str(data), "--split", "test", "--out",
            str(out)]
