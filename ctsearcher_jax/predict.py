"""Predict scanpaths on CT volumes: features (cached), sampling, dataset-format records, figures.

`predict_volumes` runs the whole chain for NIfTI files:

1. features: reused from the cache (`<features>/<name>.npy` + manifest) when it holds the CT; with
   `swin_weights` given, `feature_extraction.extract` writes what is missing. A cache entry made
   with other weights or settings is never replaced (DataError naming the recorded weights), and
   a random encoder is used only when asked for (`swin_weights="random"`);
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
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.config import Config, ExtractConfig
from ctsearcher_jax.data import manifest as mf
from ctsearcher_jax.data.manifest import read_manifest
from ctsearcher_jax.data.nifti import DEFAULT_MAX_VOXELS, open_nifti, volume_name
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import CheckpointError, DataError, WeightsError
from ctsearcher_jax.io import atomic_write_json, file_sha256, read_json
from ctsearcher_jax.model.generate import check_reader_filter, records_to_scanpaths, sample_records
from ctsearcher_jax.model.serialization import load_model, resolve_model_dir
from ctsearcher_jax.runtime.multihost import agree_on_error
from ctsearcher_jax.viz import render_ct_figures
from feature_extraction.extract import extract_volume

_log = logging.getLogger(__name__)

PREDICTIONS = "predictions.json"


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
    extracted: list[str] = dataclasses.field(default_factory=list)  # CTs encoded in this call
    random_features: list[str] = dataclasses.field(default_factory=list)  # CTs whose features
    # (reused or new) come from a random-initialised encoder, per the manifest
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def check_feature_cache(volumes: Sequence[Path], feature_dir: Path, swin_weights: str | None,
                        ext_cfg: ExtractConfig, seed: int) -> None:
    """Refuse, before any work, a prediction that would replace or lack cached features.

    swin_weights None: every CT must already have intact features of the model's width in
    `feature_dir` (nothing is extracted). Otherwise no CT may have features made with other
    weights (they would be overwritten); the message names the weights the manifest records.
    """
    manifest = mf.read_manifest(feature_dir) if feature_dir.is_dir() else {}
    channels = 16 * ext_cfg.feature_size
    if swin_weights is None:
        missing = []
        for path in volumes:
            entry = manifest.get(volume_name(path))
            why = "no features" if entry is None else mf.outputs_intact(entry, feature_dir)
            if why is None and entry.get("channels") != channels:
                why = f"{entry.get('channels')}-channel features, the model needs {channels}"
            if why is not None:
                missing.append((path, why))
        if missing:
            path, why = missing[0]
            more = f" (and {len(missing) - 1} more CTs)" if len(missing) > 1 else ""
            raise DataError(f"{feature_dir}: CT {volume_name(path)!r}: {why}{more}; predict reuses "
                            f"cached features and extracts only when given --swin-weights "
                            f"W.safetensors (converted with `ctsearcher convert-monai`; "
                            f"`--swin-weights random` only for testing)")
        return
    if str(swin_weights) == "random":
        def same(w: dict) -> bool:
            return (w.get("kind") == "random" and w.get("seed") == seed
                    and w.get("feature_size") == ext_cfg.feature_size
                    and w.get("merging_order") == ext_cfg.merging_order)
    else:
        if not Path(swin_weights).is_file():
            raise WeightsError(f"--swin-weights {swin_weights}: no such weights file; convert one "
                               "with `ctsearcher convert-monai`")
        digest = file_sha256(swin_weights)

        def same(w: dict) -> bool:
            return w.get("kind") == "file" and w.get("sha256") == digest
    for path in volumes:
        entry = manifest.get(volume_name(path))
        recorded = (entry or {}).get("weights")
        if entry and not (isinstance(recorded, dict) and same(recorded)):
            hint = (f"--swin-weights {recorded.get('path')}" if isinstance(recorded, dict)
                    and recorded.get("kind") == "file" else "--swin-weights random --seed "
                    f"{recorded.get('seed')}" if isinstance(recorded, dict) else "")
            raise DataError(
                f"{feature_dir}: features of CT {volume_name(path)!r} were made with "
                f"{mf.describe_weights(recorded)}; predict never replaces them. Leave out "
                f"--swin-weights to reuse them{f' (or pass {hint})' if hint else ''}, or give "
                f"another --features folder")


@dataclasses.dataclass
class PredictRun:
    """A prediction ready to run: the model, the settings, and the CTs (what `setup_predict`
    checked before any extraction or sampling)."""

    model: Any
    config: Config
    ext_cfg: ExtractConfig
    volumes: Sequence[Path]
    out_dir: Path
    feature_dir: Path
    swin_weights: str | None
    samples: int
    seed: int
    readers: Mapping[str, Sequence[Scanpath]] | None
    reader_filter: Sequence[str] | None
    progress: bool
    echo: Callable[[str], None]
    max_voxels: int = DEFAULT_MAX_VOXELS


@dataclasses.dataclass
class _Share:
    """This process's CTs with features ready: names, their indices in the whole list, their
    files, and the sampled records (dataset format)."""

    names: list[str] = dataclasses.field(default_factory=list)
    indices: list[int] = dataclasses.field(default_factory=list)
    sources: dict[str, Path] = dataclasses.field(default_factory=dict)
    records: list[dict] = dataclasses.field(default_factory=list)


def predict_volumes(volumes: Sequence[Path], checkpoint: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str], *, swin_weights: str | None = None,
                    samples: int = 1, seed: int = 0, feature_dir: str | os.PathLike[str] | None = None,
                    readers: Mapping[str, Sequence[Scanpath]] | None = None,
                    figures: bool = True, figure_limit: int = 4, overrides: Sequence[str] = (),
                    reader_filter: Sequence[str] | None = None,
                    progress: bool = True, echo: Callable[[str], None] | None = None,
                    max_voxels: int = DEFAULT_MAX_VOXELS) -> PredictSummary:
    """Extract (or reuse) features, sample scanpaths, write predictions.json and figures.

    volumes: NIfTI files (their names are the CT names). swin_weights: None = reuse cached
    features only; a converted weights file or "random" = extract what the cache lacks (never
    replacing features of other weights). checkpoint: a model directory or a training
    workdir. readers: ground truth per CT name: figures show it beside the prediction and samples
    take the readers' subjects. overrides: `section.key=value` applied to the model's config
    (eval.min_length, data.z_extent, ...; model.* keys are refused). A CT whose features cannot be
    made is reported in `failed` and the others still run. progress: a plain line per CT through
    `echo` (default: this module's logger; no cursor codes, so it reads the same in a log file).
    reader_filter: reader ids to predict for (reader-conditioned models; default every reader:
    the ground-truth readers of each CT, or all the model knows). max_voxels: volumes whose
    header claims more are refused unread (`data.nifti`), like any volume the voxel policy
    refuses: reported in `failed` before the model loads (DataError when no CT is left).
    """
    t0 = time.perf_counter()
    volumes, refused = usable_volumes(volumes, max_voxels)
    run = setup_predict(volumes, checkpoint, out_dir, swin_weights=swin_weights, samples=samples,
                        seed=seed, feature_dir=feature_dir, readers=readers, overrides=overrides,
                        reader_filter=reader_filter, progress=progress, echo=echo,
                        max_voxels=max_voxels)
    summary = PredictSummary(out_dir=run.out_dir, failed=refused)
    # Many CTs: each process takes every N-th CT (extraction and sampling), samples its CTs in
    # chunks sharded over its local devices, and process 0 gathers the records in CT order.
    pidx, pcount = jax.process_index(), jax.process_count()
    share, error = _Share(), None
    try:
        _features_of_share(run, summary, share, pidx, pcount)
        if share.names:
            share.records = sample_records(
                run.model, run.config, share.names, run.feature_dir, samples=run.samples,
                seed=run.seed, readers=run.readers, indices=share.indices,
                devices=jax.local_devices(), reader_filter=run.reader_filter)
        if pcount > 1:  # this process's records, for process 0 to gather
            atomic_write_json(run.out_dir / f"predictions.part-{pidx}-of-{pcount}.json",
                              {"indices": share.indices, "names": share.names,
                               "records": share.records})
    except BaseException as exc:  # noqa: BLE001 - told to the other processes, then raised
        error = exc
    agree_on_error(error)  # with several processes: also the barrier before gathering
    if pcount > 1:
        summary.predictions = _gather_parts(run.out_dir, run.feature_dir, pidx, pcount)
    elif share.names:
        summary.predictions = atomic_write_json(run.out_dir / PREDICTIONS, share.records)
    if share.names:
        summary.cts, summary.scanpaths = share.names, len(share.records)
        if figures:
            summary.figures = _render_figures(run, share, figure_limit, summary.failed)
    summary.seconds = time.perf_counter() - t0
    return summary


def usable_volumes(volumes: Sequence[Path], max_voxels: int
                   ) -> tuple[list[Path], list[tuple[str, str]]]:
    """The volumes whose header passes the voxel policy (`data.nifti.open_nifti`; a few hundred
    bytes read each) and `(file, message)` for the others, each also logged as an error.

    Raises DataError (the first message) when no volume is left.
    """
    good, refused = [], []
    for path in volumes:
        try:
            open_nifti(path, max_voxels=max_voxels)
        except DataError as exc:
            refused.append((str(path), str(exc)))
            _log.error(str(exc))
            continue
        good.append(Path(path))
    if refused and not good:
        more = f" (and {len(refused) - 1} more CTs)" if len(refused) > 1 else ""
        raise DataError(f"{refused[0][1]}{more}")
    return good, refused


def setup_predict(volumes: Sequence[Path], checkpoint: str | os.PathLike[str],
                  out_dir: str | os.PathLike[str], *, swin_weights: str | None, samples: int,
                  seed: int, feature_dir: str | os.PathLike[str] | None,
                  readers: Mapping[str, Sequence[Scanpath]] | None, overrides: Sequence[str],
                  reader_filter: Sequence[str] | None, progress: bool,
                  echo: Callable[[str], None] | None,
                  max_voxels: int = DEFAULT_MAX_VOXELS) -> PredictRun:
    """Load the model, apply the overrides and check the reader filter and the feature cache:
    everything that can refuse the prediction, before any extraction (`predict_volumes`)."""
    out_dir = Path(out_dir)
    feature_dir = Path(feature_dir) if feature_dir is not None else out_dir / "features"
    model, config = load_model(resolve_model_dir(checkpoint))
    if overrides:
        if any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides):
            raise CheckpointError("model.* cannot be overridden at prediction time: the weights fix it")
        config = config_lib.from_dict(config_lib.apply_overrides(config_lib.to_dict(config),
                                                                 list(overrides)))
    if reader_filter:
        check_reader_filter(config, reader_filter)  # before any extraction
    ext_cfg = dataclasses.replace(extraction_config(config), max_voxels=max_voxels)
    check_feature_cache(volumes, feature_dir, swin_weights, ext_cfg, seed)
    return PredictRun(model, config, ext_cfg, volumes, out_dir, feature_dir, swin_weights,
                      samples, seed, readers, reader_filter, progress, echo or _log.info,
                      max_voxels)


def _features_of_share(run: PredictRun, summary: PredictSummary, share: _Share, pidx: int,
                       pcount: int) -> None:
    """Every N-th CT (this process's): cached features, or extracted ones (`swin_weights`);
    a CT whose features cannot be made goes to `summary.failed`."""
    manifest = read_manifest(run.feature_dir) if run.feature_dir.is_dir() else {}
    for i, path in list(enumerate(run.volumes))[pidx::pcount]:
        if run.swin_weights is None:  # checked: the cache holds intact features of this CT
            name = volume_name(path)
            entry = manifest[name]
        else:
            if run.progress:
                run.echo(f"features [{i + 1}/{len(run.volumes)}] {path.name}")
            try:
                result = extract_volume(path, run.feature_dir, run.swin_weights, run.ext_cfg,
                                        seed=run.seed, keep_others=True, process=(pidx, pcount))
            except DataError as exc:
                summary.failed.append((str(path), str(exc)))
                _log.error(f"{path}: {exc}")
                continue
            name, entry = result.name, result.entry or {}
            if not result.skipped:
                summary.extracted.append(name)
        if (entry.get("weights") or {}).get("kind") == "random":
            summary.random_features.append(name)
        share.names.append(name)
        share.indices.append(i)
        share.sources[name] = path


def _render_figures(run: PredictRun, share: _Share, figure_limit: int,
                    failed: list[tuple[str, str]]) -> dict[str, dict[str, Path]]:
    """The figures of the first `figure_limit` CTs of the whole list (this process's ones); a CT
    whose volume cannot be drawn goes to `failed` (its predictions are written)."""
    by_ct = records_to_scanpaths(share.records)
    figures = {}
    for name, index in zip(share.names, share.indices):
        if index >= figure_limit:
            continue
        gt = list(run.readers.get(name, ())) if run.readers else []
        try:
            figures[name] = render_ct_figures(
                share.sources[name], gt, by_ct.get(name), run.out_dir / "figures", name=name,
                sources={"predictions": str(run.out_dir / PREDICTIONS)},
                max_voxels=run.max_voxels)
        except DataError as exc:  # this CT's volume (voxels): its predictions stay, others go on
            failed.append((str(share.sources[name]), f"{exc}; no figures for CT {name!r}"))
            _log.error(f"{exc}; no figures for CT {name!r}")
    return figures


def _gather_parts(out_dir: Path, feature_dir: Path, pidx: int, pcount: int) -> Path | None:
    """Process 0: the processes' record parts -> predictions.json in CT order; manifest parts
    merged. Every process: a barrier after it, and the path (None when no CT had records)."""
    path = out_dir / PREDICTIONS
    error = None
    if pidx == 0:
        try:
            parts = [out_dir / f"predictions.part-{p}-of-{pcount}.json" for p in range(pcount)]
            by_index = []
            for part in parts:
                data = read_json(part)
                order = dict(zip(data["names"], data["indices"]))
                by_index += [(order[r["name"]], k, r) for k, r in enumerate(data["records"])]
            records = [r for _, _, r in sorted(by_index, key=lambda t: (t[0], t[1]))]
            if records:
                atomic_write_json(path, records)
            for part in parts:
                part.unlink()
            if feature_dir.is_dir() and any(feature_dir.glob(mf.PART_GLOB)):
                mf.merge_parts(feature_dir)
        except BaseException as exc:  # noqa: BLE001 - told to the other processes, then raised
            error = exc
    agree_on_error(error)
    return path if path.is_file() else None
