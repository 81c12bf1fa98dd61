"""Learning bars of issue 15 on synthetic data: supervised vs uniform, reader conditioning, fine-tuning.

    python scripts/bench_learning.py [--out runs/bench_learning] [--num-cts 64] [--num-readers 4]
                                     [--seeds 0 1 2] [--epochs 30] [--ft-epochs 5]

One command: synthesises CTs x readers (reader styles differ in thoroughness, see
data/synthetic), extracts features with a random-initialised Swin UNETR, then per seed trains
the small model (d_model 64, 2+2 layers, grid 4x4x4) without and with reader conditioning,
fine-tunes the unconditioned one with the ScanMatch reward, predicts one scanpath per test
reader and scores it under the original protocol; the uniform baseline is scored once. Prints:

* supervised (no conditioning) vs uniform: ScanMatch with/without duration, SED, MultiMatch
  vector/length/position/direction (mean over seeds);
* conditioning vs none: ScanMatch with duration per seed, mean, spread (max - min);
* fine-tuned vs its starting checkpoint: hmean of the ScanMatch means on the test split;
* seconds per optimizer step, supervised vs fine-tuning (from the runs' CTs/s), and the share
  of a fine-tuning step spent beyond the supervised step (sampling + the in-step reward).

A benchmark, not a test; every stage is an ordinary `ctsearcher` command. Run again with the
same --out, every stage picks up what is there (features up to date, training and fine-tuning
resume at their last step), so the step times are those logged by the first run: delete --out
for a fresh measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctsearcher_jax import cli  # noqa: E402

SMALL = {
    "model": {"d_model": 64, "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2,
              "dim_feedforward": 128, "dropout": 0.1, "feature_dim": 192, "grid": [4, 4, 4],
              "max_length": 64},
    # eval_split test: only the last step is evaluated (eval_every_epochs 1000), so nothing is
    # selected on it, and the 48 training CTs of the recorded runs stay training CTs
    "data": {"z_extent": "volume", "eval_split": "test"},
    "train": {"lr": 1.0e-3, "warmup_epochs": 1, "batch_size": 4, "log_every": 1,
              "eval_scanpath_metrics": False, "eval_every_epochs": 1000, "keep_last": 1},
    "eval": {"min_length": 8, "multimatch_alignment": "dp", "best_metric": "eval_loss"},
    "extract": {"feature_size": 12, "batch": 2},
}
SHOWN = ["scanmatch_with_duration", "scanmatch_without_duration", "sed", "multimatch_vector",
         "multimatch_length", "multimatch_position", "multimatch_direction"]


def ctsearcher(*argv: str) -> None:
    t = time.perf_counter()
    print(f"$ ctsearcher {' '.join(argv)}", flush=True)
    if cli.main(list(argv)) != 0:
        raise SystemExit(f"`ctsearcher {argv[0]}` failed")
    print(f"    ({time.perf_counter() - t:.1f} s)", flush=True)


def score(pred: Path, data: Path, out: Path) -> dict[str, float]:
    ctsearcher("evaluate", "--pred", str(pred), "--data", str(data), "--split", "test",
               "--multimatch-alignment", "dp", "--out", str(out))
    summary = json.loads(out.read_text())["summary"]
    return {k: v["mean"] for k, v in summary.items() if isinstance(v, dict) and "mean" in v}


def step_seconds(workdir: Path, batch: int) -> float:
    """Median seconds per optimizer step from the logged CTs/s (first step, compilation, left out)."""
    rates = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["cts_per_s"] for r in rates if r.get("split") == "train" and r.get("step", 0) > 1
             and r.get("cts_per_s")]
    return batch / statistics.median(rates) if rates else float("nan")


def step_cost_line(supervised: float, finetune: float) -> str:
    """Seconds per optimizer step and the part of a fine-tuning step beyond a supervised one.

    `supervised` is the step of the run fine-tuning starts from (no reader conditioning: the
    same model, forward and backward); a fine-tuning step adds the sampling, the log-probabilities
    and the in-step reward. The sampling is a few elementwise draws, so the difference is mostly
    the reward's.
    """
    extra = finetune - supervised
    return (f"seconds per step: supervised {supervised:.3f}, fine-tuning {finetune:.3f} "
            f"({finetune / supervised:.1f}x); sampling + reward {extra:.3f} s = "
            f"{100 * extra / finetune:.0f}% of a fine-tuning step "
            f"({'does not dominate' if extra < 0.5 * finetune else 'dominates'})")


def hmean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--num-cts", type=int, default=64)
    p.add_argument("--num-readers", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--ft-epochs", type=int, default=5)
    p.add_argument("--ft-samples", type=int, default=5)
    args = p.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, features = out / "data", out / "features"
    cfg = out / "small.yaml"
    config = json.loads(json.dumps(SMALL))
    config["data"].update({"data_dir": str(data), "feature_dir": str(features)})
    config["train"]["epochs"] = args.epochs
    cfg.write_text(yaml.safe_dump(config))
    if not (data / "data_simplified_split_matched_pt.json").is_file():
        ctsearcher("synth", "--out", str(data), "--num-cts", str(args.num_cts), "--num-readers",
                   str(args.num_readers), "--seed", "0", "--shape", "64", "64", "48",
                   "--min-fixations", "20", "--max-fixations", "60")
    if not (features / "manifest.json").is_file():
        ctsearcher("extract", "--ct-dir", str(data / "cts"), "--swin-weights", "random", "--out",
                   str(features), "--config", str(cfg), "--seed", "0", "--no-progress")
    ctsearcher("baselines", "--data", str(data), "--out", str(out / "baselines"), "--split",
               "test", "--seed", "0", "--baseline", "uniform")
    uniform = score(out / "baselines" / "uniform.json", data, out / "eval_uniform.json")

    results: dict[str, dict[int, dict[str, float]]] = {"none": {}, "embedding": {}, "finetuned": {}}
    times: dict[str, list[float]] = {"supervised": [], "finetune": []}
    for seed in args.seeds:
        for cond in ("none", "embedding"):
            work = out / f"sup_{cond}_{seed}"
            ctsearcher("train", "--config", str(cfg), "--workdir", str(work), "--set",
                       f"train.seed={seed}", "--set", f"model.reader_conditioning={cond}")
            if cond == "none":  # the model fine-tuning starts from: the same forward/backward
                times["supervised"].append(step_seconds(work, config["train"]["batch_size"]))
            ctsearcher("predict", "--data", str(data), "--split", "test", "--model", str(work),
                       "--features", str(features), "--out", str(work / "pred"), "--seed",
                       str(seed), "--max-figure-cts", "0", "--no-progress")
            results[cond][seed] = score(work / "pred" / "predictions.json", data,
                                        work / "eval.json")
        work = out / f"ft_{seed}"
        ctsearcher("finetune", "--model", str(out / f"sup_none_{seed}"), "--workdir", str(work),
                   "--set", f"finetune.epochs={args.ft_epochs}", "--set",
                   f"finetune.samples={args.ft_samples}")
        times["finetune"].append(step_seconds(work, config["train"]["batch_size"]))
        ctsearcher("predict", "--data", str(data), "--split", "test", "--model", str(work),
                   "--features", str(features), "--out", str(work / "pred"), "--seed", str(seed),
                   "--max-figure-cts", "0", "--no-progress")
        results["finetuned"][seed] = score(work / "pred" / "predictions.json", data,
                                           work / "eval.json")

    seeds = args.seeds

    def mean_of(kind: str, metric: str) -> float:
        return statistics.mean(results[kind][s].get(metric, float("nan")) for s in seeds)

    lines = [f"bench_learning: {args.num_cts} CTs x {args.num_readers} readers, seeds {seeds}, "
             f"{args.epochs} supervised epochs, {args.ft_epochs} fine-tuning epochs "
             f"(K={args.ft_samples}), {time.perf_counter() - t0:.0f} s in all", "",
             "| metric | supervised (mean over seeds) | uniform | better |", "|---|---|---|---|"]
    for m in SHOWN:
        if m in uniform:
            higher = not m.startswith("sed")
            sup = mean_of("none", m)
            won = sup > uniform[m] if higher else sup < uniform[m]
            lines.append(f"| {m} | {sup:.4f} | {uniform[m]:.4f} | {'model' if won else 'uniform'} |")
    lines += ["", "| seed | ScanMatch w/ dur, none | embedding | hmean SM: start | fine-tuned |",
              "|---|---|---|---|---|"]
    h = {k: {s: hmean(results[k][s]["scanmatch_with_duration"],
                      results[k][s]["scanmatch_without_duration"]) for s in seeds}
         for k in ("none", "finetuned")}
    for s in seeds:
        lines.append(f"| {s} | {results['none'][s]['scanmatch_with_duration']:.4f} | "
                     f"{results['embedding'][s]['scanmatch_with_duration']:.4f} | "
                     f"{h['none'][s]:.4f} | {h['finetuned'][s]:.4f} |")

    def gain(a: dict, b: dict) -> tuple[float, float]:
        d = [b[s] - a[s] for s in seeds]
        spread = max(max(a.values()) - min(a.values()), max(b.values()) - min(b.values()))
        return statistics.mean(d), spread

    smd = {k: {s: results[k][s]["scanmatch_with_duration"] for s in seeds}
           for k in ("none", "embedding")}
    g1, s1 = gain(smd["none"], smd["embedding"])
    g2, s2 = gain(h["none"], h["finetuned"])
    lines += ["", f"conditioning gain (ScanMatch w/ dur): {g1:+.4f}, seed spread {s1:.4f} -> "
              f"{'met' if g1 > s1 else 'NOT met'}",
              f"fine-tuning gain (hmean ScanMatch): {g2:+.4f}, seed spread {s2:.4f} -> "
              f"{'met' if g2 > s2 else 'NOT met'}",
              step_cost_line(statistics.mean(times["supervised"]),
                             statistics.mean(times["finetune"]))]
    text = "\n".join(lines)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
