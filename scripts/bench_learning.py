"""Learning bench on synthetic data: CT-Searcher and CT-Searcher AR against the baselines.

    python scripts/bench_learning.py [--out runs/bench_learning] [--data-seeds 0 1]
                                     [--seeds 0 1 2] [--num-cts 64] [--num-readers 4] [--epochs 30]
                                     [--ft-epochs 5] [--ft-samples 5] [--val-cts 8] [--jobs 2]

One command. Per synthetic draw (`--data-seeds`: `ctsearcher synth --seed S`, reader styles
differ in thoroughness, see data/synthetic): synthesise CTs x readers, carve `--val-cts`
validation CTs out of the training split (seeded by the data seed, written as split "val",
which the runs' `data.eval_split: validation` takes as the dataset's own, `data/splits.py`),
extract features with a random-initialised Swin UNETR, score the baselines (uniform,
centre-bias, drilling, human consistency) on the test split; then per training seed
(`--seeds`) train the small model (d_model 64, 2+2 layers, grid 4x4x4; the checkpoint and the
AR arm selected by the *validation* loss, never the test split):

    ct_searcher        CT-Searcher, no reader input
    ct_searcher_cond   + reader conditioning (embedding)
    ct_searcher_ft     ct_searcher fine-tuned with the ScanMatch reward
    ar                 CT-Searcher AR (model/ct_searcher_ar.py), no reader input
    ar_cond            + reader conditioning, reader embedding dropout `AR_READER_DROPOUT`
    ar_chosen          ar or ar_cond, whichever has the lower validation loss (its rows repeat)
    ar_ft              ar_chosen fine-tuned with the ScanMatch reward

(the data of every draw, then the training chains of every (data seed, training seed), run in
`--jobs` worker processes, one per CPU core), predict one scanpath per test reader and score it
under the original protocol (every default metric: ScanMatch, MultiMatch, SED; plus saliency
CC). Prints, per data seed, every row (the models as mean and spread = max - min over training
seeds), the bars of issue 26 (AR chosen vs centre-bias and drilling on SED and MultiMatch
direction, margin vs spread; ScanMatch with duration within 0.01 of the best CT-Searcher arm;
saliency CC vs CT-Searcher), the seconds per training step and per sampled scanpath (10 per
test CT, warm) of AR vs CT-Searcher.

A benchmark, not a test; every stage is an ordinary `ctsearcher` command. Run again with the
same --out and every stage picks up what is there (features up to date, runs resumed or reused,
scores reread), so the step times are those logged by the first run: delete --out for a fresh
measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctsearcher_jax import cli  # noqa: E402
from ctsearcher_jax.data.schema import load_dataset  # noqa: E402
from ctsearcher_jax.io import atomic_write_json, read_json  # noqa: E402
from ctsearcher_jax.model.generate import sample_records  # noqa: E402
from ctsearcher_jax.model.serialization import load_model  # noqa: E402

SMALL = {
    "model": {"d_model": 64, "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2,
              "dim_feedforward": 128, "dropout": 0.1, "feature_dim": 192, "grid": [4, 4, 4],
              "max_length": 64},
    "data": {"z_extent": "volume", "eval_split": "validation"},
    "train": {"lr": 1.0e-3, "warmup_epochs": 1, "batch_size": 4, "log_every": 1,
              "eval_scanpath_metrics": False, "eval_every_epochs": 1000, "keep_last": 1},
    "eval": {"min_length": 20, "multimatch_alignment": "dp", "best_metric": "eval_loss"},
    "extract": {"feature_size": 12, "batch": 2},
}
# The AR arm: model.ar_layers 1 (the plan layer runs once per CT); its learning rate and reader
# embedding dropout chosen on the validation loss of data seed 0 (README, "CT-Searcher AR").
AR = ["model.arch=ct_searcher_ar", "model.ar_layers=1", "train.lr=3e-3"]
AR_READER_DROPOUT = 0.5
ARMS = {"ct_searcher": [], "ct_searcher_cond": ["model.reader_conditioning=embedding"],
        "ar": AR, "ar_cond": AR + ["model.reader_conditioning=embedding",
                                   f"model.reader_dropout={AR_READER_DROPOUT}"]}
FINETUNED = {"ct_searcher_ft": "ct_searcher", "ar_ft": "ar_chosen"}
MODEL_ROWS = ["ct_searcher", "ct_searcher_cond", "ct_searcher_ft", "ar", "ar_cond", "ar_chosen",
              "ar_ft"]
BASELINES = ["uniform", "centre", "drilling", "human"]
SHOWN = ["scanmatch_with_duration", "scanmatch_without_duration", "sed", "multimatch_vector",
         "multimatch_direction", "multimatch_length", "multimatch_position",
         "multimatch_duration", "saliency_cc"]
FAMILIES = ["scanmatch", "multimatch", "sed", "saliency"]
SAMPLES_TIMED = 10  # scanpaths per test CT in the sampling cost


def ctsearcher(*argv: str) -> None:
    t = time.perf_counter()
    print(f"$ ctsearcher {' '.join(argv)}", flush=True)
    if cli.main(list(argv)) != 0:
        raise SystemExit(f"`ctsearcher {argv[0]}` failed")
    print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)


def score(data: Path, out: Path, pred: Path | None = None) -> dict[str, float]:
    """Summary means of `evaluate` on the test split (reread when `out` exists)."""
    if not out.is_file():
        args = ["--pred", str(pred)] if pred is not None else ["--protocol", "human"]
        ctsearcher("evaluate", *args, "--data", str(data), "--split", "test", "--metrics",
                   *FAMILIES, "--multimatch-alignment", "dp", "--out", str(out), "--no-progress")
    summary = json.loads(out.read_text())["summary"]
    return {k: v["mean"] for k, v in summary.items() if isinstance(v, dict) and "mean" in v}


def carve_validation(data: Path, count: int, seed: int) -> list[str]:
    """Move `count` training CTs (seeded choice) to split "val", once; returns their names."""
    path = data / "data_simplified_split_matched_pt.json"
    records = read_json(path)
    val = sorted({r["name"] for r in records if r["split"] == "val"})
    if val:
        return val
    train = sorted({r["name"] for r in records if r["split"] == "train"})
    rng = np.random.default_rng([seed, 26])
    val = sorted(rng.choice(train, size=count, replace=False).tolist())
    for r in records:
        if r["name"] in val:
            r["split"] = "val"
    atomic_write_json(path, records)
    return val


def prepare_data(out: Path, args, data_seed: int) -> None:
    """Synthesise into out/data, carve validation, extract into out/features, write
    out/small.yaml."""
    data, features, cfg = out / "data", out / "features", out / "small.yaml"
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(SMALL))
    config["data"].update({"data_dir": str(data), "feature_dir": str(features)})
    config["train"]["epochs"] = args.epochs
    cfg.write_text(yaml.safe_dump(config))
    if not (data / "data_simplified_split_matched_pt.json").is_file():
        ctsearcher("synth", "--out", str(data), "--num-cts", str(args.num_cts), "--num-readers",
                   str(args.num_readers), "--seed", str(data_seed), "--shape", "64", "64", "48",
                   "--min-fixations", "20", "--max-fixations", "60")
    val = carve_validation(data, args.val_cts, data_seed)
    print(f"validation CTs (data seed {data_seed}): {val}", flush=True)
    if not (features / "manifest.json").is_file():
        ctsearcher("extract", "--ct-dir", str(data / "cts"), "--swin-weights", "random", "--out",
                   str(features), "--config", str(cfg), "--seed", "0", "--no-progress")


def score_baselines(out: Path, data: Path) -> dict[str, dict[str, float]]:
    if not (out / "baselines" / "drilling.json").is_file():
        ctsearcher("baselines", "--data", str(data), "--out", str(out / "baselines"), "--split",
                   "test", "--seed", "0", "--baseline", "uniform", "centre", "drilling")
    rows = {b: score(data, out / f"eval_{b}.json", out / "baselines" / f"{b}.json")
            for b in BASELINES if b != "human"}
    rows["human"] = score(data, out / "eval_human.json")
    return rows


def validation_loss(workdir: Path) -> float:
    """The selecting eval_loss (validation split) of the exported model."""
    return float(read_json(workdir / "model" / "export.json")["value"])


def run_arm(out: Path, cfg: Path, data: Path, features: Path, arm: str, seed: int,
            source: Path | None = None, ft: tuple[int, int] = (5, 5)) -> dict[str, float]:
    """Train (or fine-tune from `source`), predict the test split, score; reused when done."""
    work = out / f"{arm}_{seed}"
    if not (work / "model" / "model.safetensors").is_file():
        if source is None:
            sets = [x for o in ARMS[arm] for x in ("--set", o)]
            ctsearcher("train", "--config", str(cfg), "--workdir", str(work), "--set",
                       f"train.seed={seed}", *sets, "--no-progress")
        else:
            ctsearcher("finetune", "--model", str(source), "--workdir", str(work), "--set",
                       f"finetune.epochs={ft[0]}", "--set", f"finetune.samples={ft[1]}")
    pred = work / "pred" / "predictions.json"
    if not pred.is_file():
        ctsearcher("predict", "--data", str(data), "--split", "test", "--model", str(work),
                   "--features", str(features), "--out", str(work / "pred"), "--seed", str(seed),
                   "--max-figure-cts", "0", "--no-progress")
    return score(data, work / "eval.json", pred)


def run_seed(out: Path, cfg: Path, data: Path, features: Path, seed: int,
             args) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Every model row for one training seed, and the validation losses that chose ar_chosen."""
    rows = {arm: run_arm(out, cfg, data, features, arm, seed) for arm in ARMS}
    losses = {arm: validation_loss(out / f"{arm}_{seed}") for arm in ("ar", "ar_cond")}
    chosen = min(losses, key=losses.get)
    rows["ar_chosen"] = rows[chosen]
    losses["chosen"] = chosen
    sources = {"ct_searcher": out / f"ct_searcher_{seed}", "ar_chosen": out / f"{chosen}_{seed}"}
    for arm, start in FINETUNED.items():
        rows[arm] = run_arm(out, cfg, data, features, arm, seed, source=sources[start],
                            ft=(args.ft_epochs, args.ft_samples))
    return rows, losses


def step_seconds(workdir: Path, batch: int) -> float:
    """Median seconds per optimizer step from the logged CTs/s (first step, compilation, left out)."""
    rates = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["cts_per_s"] for r in rates if r.get("split") == "train" and r.get("step", 0) > 1
             and r.get("cts_per_s")]
    return batch / statistics.median(rates) if rates else float("nan")


def sampling_seconds(workdir: Path, data: Path, features: Path) -> float:
    """Warm seconds per sampled scanpath: SAMPLES_TIMED per test CT, the model's own sampler."""
    model, config = load_model(workdir / "model")
    names = [it.name for it in load_dataset(data) if it.split == "test"]
    times = []
    for repeat in range(2):  # the first call compiles
        t = time.perf_counter()
        sample_records(model, config, names, features, samples=SAMPLES_TIMED, seed=repeat)
        times.append(time.perf_counter() - t)
    return times[-1] / (len(names) * SAMPLES_TIMED)


def data_job(out: Path, data_seed: int, args) -> dict[str, dict[str, float]]:
    """One synthetic draw in a worker process: data, validation split, features, baseline rows."""
    prepare_data(out, args, data_seed)
    return score_baselines(out, out / "data")


def seed_job(out: Path, data_seed: int, seed: int, args) -> tuple[dict, dict]:
    """One (data seed, training seed) chain in a worker process: every model row."""
    data, features, cfg = out / "data", out / "features", out / "small.yaml"
    return run_seed(out, cfg, data, features, seed, args)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-cts", type=int, default=64)
    p.add_argument("--num-readers", type=int, default=4)
    p.add_argument("--val-cts", type=int, default=8)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=5)
    p.add_argument("--ft-samples", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2,
                   help="worker processes for the draws and the training chains (one per CPU core)")
    args = p.parse_args()
    t0 = time.perf_counter()
    outs = {d: Path(args.out) / f"d{d}" for d in args.data_seeds}
    jobs = [(d, s) for d in args.data_seeds for s in args.seeds]
    # Two pools: `extract` makes glibc keep freed memory in its process on a CPU-only host (one
    # malloc arena, runtime/allocator.py), which helps extraction and not training, so the
    # training chains run in fresh worker processes with glibc's defaults.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        # one data seed per worker: feature extraction on CPU keeps about 1.4 cores busy, so two
        # draws side by side take 0.7x the time of one after the other
        baselines = dict(zip(outs, pool.map(data_job, outs.values(), outs, [args] * len(outs))))
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        done = dict(zip(jobs, pool.map(seed_job, [outs[d] for d, _ in jobs], [d for d, _ in jobs],
                                       [s for _, s in jobs], [args] * len(jobs))))
    sections = []
    for d, out in outs.items():
        first = args.seeds[0]
        batch = SMALL["train"]["batch_size"]
        cost = {"step": {a: step_seconds(out / f"{a}_{first}", batch) for a in ("ct_searcher", "ar")},
                "sample": {a: sampling_seconds(out / f"{a}_{first}", out / "data", out / "features")
                           for a in ("ct_searcher", "ar")}}
        per_seed = {s: done[(d, s)][0] for s in args.seeds}
        losses = {s: done[(d, s)][1] for s in args.seeds}
        sections.append(report(d, args, baselines[d], per_seed, losses, cost))
    text = "\n\n".join([f"bench_learning: {args.num_cts} CTs x {args.num_readers} readers per draw "
                         f"({args.val_cts} of the training CTs held out for validation), data "
                         f"seeds {args.data_seeds}, training seeds {args.seeds}, {args.epochs} "
                         f"epochs, fine-tuning {args.ft_epochs} epochs (K={args.ft_samples}), "
                         f"{args.jobs} worker processes; {time.perf_counter() - t0:.0f} s in all",
                         *sections])
    print("\n" + text)
    (Path(args.out) / "table.md").write_text(text + "\n")
    return 0


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def report(data_seed: int, args, baselines, per_seed, losses, cost) -> str:
    """The tables and bar lines of one data seed."""
    seeds = args.seeds
    lines = [f"### data seed {data_seed}", "",
             "| row | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
    for b in BASELINES:
        lines.append(f"| {b} | " + " | ".join(f"{baselines[b].get(m, float('nan')):.4f}"
                                              for m in SHOWN) + " |")
    mean = {r: {m: statistics.mean(per_seed[s][r].get(m, float("nan")) for s in seeds) for m in SHOWN}
            for r in MODEL_ROWS}
    width = {r: {m: spread([per_seed[s][r].get(m, float("nan")) for s in seeds]) for m in SHOWN}
             for r in MODEL_ROWS}
    for r in MODEL_ROWS:
        lines.append(f"| {r} | " + " | ".join(f"{mean[r][m]:.4f} ±{width[r][m]:.4f}"
                                              for m in SHOWN) + " |")
    lines += ["", "validation loss (ar / ar_cond -> chosen): " + "; ".join(
        f"seed {s}: {losses[s]['ar']:.4f} / {losses[s]['ar_cond']:.4f} -> {losses[s]['chosen']}"
        for s in seeds), ""]
    lines += bar_lines(baselines, mean, width)
    step, sample = cost["step"], cost["sample"]
    lines += [f"seconds per training step: CT-Searcher {step['ct_searcher']:.4f}, AR "
              f"{step['ar']:.4f} ({step['ar'] / step['ct_searcher']:.2f}x); per sampled scanpath "
              f"({SAMPLES_TIMED} per test CT, warm): CT-Searcher {sample['ct_searcher'] * 1e3:.2f} "
              f"ms, AR {sample['ar'] * 1e3:.2f} ms ({sample['ar'] / sample['ct_searcher']:.2f}x)"]
    return "\n".join(lines)


def bar_lines(baselines, mean, width) -> list[str]:
    """Issue 26's bars for ar_chosen (mean over training seeds, spread = max - min)."""
    out = []
    for metric, lower in (("sed", True), ("multimatch_direction", False)):
        ours, sp = mean["ar_chosen"][metric], width["ar_chosen"][metric]
        for b in ("centre", "drilling"):
            margin = (baselines[b][metric] - ours) if lower else (ours - baselines[b][metric])
            out.append(f"- {metric}: ar_chosen {ours:.4f} vs {b} {baselines[b][metric]:.4f}: "
                       f"margin {margin:+.4f}, spread {sp:.4f} -> "
                       f"{'met' if margin > sp else 'NOT met'}")
    best = max(("ct_searcher", "ct_searcher_cond", "ct_searcher_ft"),
               key=lambda r: mean[r]["scanmatch_with_duration"])
    sm, ref = mean["ar_chosen"]["scanmatch_with_duration"], mean[best]["scanmatch_with_duration"]
    out.append(f"- scanmatch_with_duration: ar_chosen {sm:.4f} vs best CT-Searcher arm ({best}) "
               f"{ref:.4f}: {sm - ref:+.4f} -> {'met' if sm >= ref - 0.01 else 'NOT met'}")
    cc_best = max(mean[r]["saliency_cc"] for r in ("ct_searcher", "ct_searcher_cond", "ct_searcher_ft"))
    cc = mean["ar_chosen"]["saliency_cc"]
    out.append(f"- saliency_cc: ar_chosen {cc:.4f} vs best CT-Searcher arm {cc_best:.4f} -> "
               f"{'met' if cc > cc_best else 'NOT met'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
