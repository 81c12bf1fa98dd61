"""Predict scanpaths on CT volumes: features (cached), sampling, dataset-format records, figures.

`predict_volumes` runs the whole chain for NIfTI files:

1. features: `feature_extraction.extract` writes `<features>/<name>.npy` + manifest, reusing what the
   cache already holds (same source bytes, settings and weights);
2. model: an exported CT-Searcher directory (`model.safetensors` + `config.yaml`, written by
   `ctsearcher import-upstream` or by training into `<workdir>/model`);
3. sampling: one jit-compiled call per chunk of CTs draws the scanpaths (`model.sampling`);
4. outputs: `predictions.json` in the dataset record format (name, subject, X, Y, Z, T, length),
   written atomically, and the figures of `ctsearcher_jax.viz` per CT.

Subjects: with ground-truth readers (`readers` given, e.g. `--data DIR --split test`), sample s of
reader r gets that reader's subject, in sample-major blocks, which is the pairing the original
evaluation protocol uses (prediction i against reader i). Without readers, samples are numbered
1..N.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence


from ctsearcher_jax.config import Config, ExtractConfig
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import CheckpointError, DataError

PREDICTIONS = "predictions.json"


def resolve_model_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """An exported model directory, or a training workdir holding one in `model/`."""
    path = Path(checkpoint)
    for candidate in (path, path / "model"):
        if (candidate / "model.safetensors").is_file():
            return candidate
    raise CheckpointError(
        f"{path}: no model.safetensors here or in {path / 'model'}; pass a training workdir "
        f"(after `ctsearcher train`) or a directory written by `ctsearcher import-upstream`")


def extraction_config(model_config: Config, base: ExtractConfig | None = None) -> ExtractConfig:
    """The extraction settings whose features fit the model (dec4 has 16 x feature_size channels)."""
    base = base or model_config.extract
    feature_dim = model_config.model.feature_dim
    if feature_dim % 16 or (feature_dim // 16) % 12:
        raise CheckpointError(
            f"the model expects {feature_dim}-channel features, which no Swin UNETR makes "
            f"(dec4 has 16 x feature_size channels, feature_size a multiple of 12); extract features "
            f"yourself into --features")
    return dataclasses.replace(base, feature_size=feature_dim // 16)


@dataclasses.dataclass
class PredictSummary:
    """What `predict_volumes` did."""

    out_dir: Path
    predictions: Path | None = None
    cts: list[str] = dataclasses.field(default_factory=list)
    scanpaths: int = 0
    figures: dict[str, dict[str, Path]] = dataclasses.field(default_factory=dict)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def predict_volumes(volumes: Sequence[Path], checkpoint: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str], *, swin_weights: str = "random",
                    samples: int = 1, seed: int = 0, feature_dir: str | os.PathLike[str] | None = None,
                    readers: Mapping[str, Sequence[Scanpath]] | None = None,
                    figures: bool = True, figure_limit: int = 4, overrides: Sequence[str] = (),
                    progress: bool = True, echo: Callable[[str], None] = print) -> PredictSummary:
    """Extract (or reuse) features, sample scanpaths, write predictions.json and figures.

    volumes: NIfTI files (their names are the CT names). checkpoint: a model directory or a training
    workdir. readers: ground truth per CT name: figures show it beside the prediction and samples
    take the readers' subjects. overrides: `section.key=value` applied to the model's config
    (eval.min_length, data.z_extent, ...; model.* keys are refused). A CT whose features cannot be
    made is reported in `failed` and the others still run.
    """
    from ctsearcher_jax import config as config_lib
    from ctsearcher_jax.io import atomic_write_json
    from ctsearcher_jax.model.generate import records_to_scanpaths, sample_records
    from ctsearcher_jax.model.serialization import load_model
    from feature_extraction.extract import extract_volume

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    feature_dir = Path(feature_dir) if feature_dir is not None else out_dir / "features"
    model_dir = resolve_model_dir(checkpoint)
    model, config = load_model(model_dir)
    if overrides:
        if any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides):
            raise CheckpointError("model.* cannot be overridden at prediction time: the weights fix it")
        config = config_lib.from_dict(config_lib.apply_overrides(config_lib.to_dict(config),
                                                                 list(overrides)))
    ext_cfg = extraction_config(config)
    summary = PredictSummary(out_dir=out_dir)
    names: list[str] = []
    sources: dict[str, Path] = {}
    for i, path in enumerate(volumes):
        if progress:
            echo(f"features [{i + 1}/{len(volumes)}] {path.name}")
        try:
            result = extract_volume(path, feature_dir, swin_weights, ext_cfg, seed=seed)
        except (DataError,) as exc:
            summary.failed.append((str(path), str(exc)))
            print(f"{path}: {exc}", file=sys.stderr)
            continue
        names.append(result.name)
        sources[result.name] = path
    if not names:
        summary.seconds = time.perf_counter() - t0
        return summary
    records = sample_records(model, config, names, feature_dir, samples=samples, seed=seed,
                             readers=readers)
    summary.predictions = atomic_write_json(out_dir / PREDICTIONS, records)
    summary.cts, summary.scanpaths = names, len(records)
    if figures:
        from ctsearcher_jax.viz import render_ct_figures

        by_ct = records_to_scanpaths(records)
        for name in names[:figure_limit]:
            gt = list(readers.get(name, ())) if readers else []
            summary.figures[name] = render_ct_figures(sources[name], gt, by_ct.get(name),
                                                      out_dir / "figures", name=name)
    summary.seconds = time.perf_counter() - t0
    return summary
