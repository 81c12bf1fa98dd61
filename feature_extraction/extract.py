"""Feature extraction over a directory of CT volumes: load, window, encode, merge, write.

For every `<name>.nii[.gz]` in a directory this writes, into the output directory,
`<name>.npy` (merged dec4, `(16*feature_size, gi, gj, gk)` float32, `gi = padded_I // 32`),
`<name>_hidden_states_out_4.npy` (the merged last SwinViT stage, same shape) and an entry of
`manifest.json` (see `ctsearcher_jax.data.manifest`). The procedure is the original's
(`swin_unet_extract_feature.py` + `merge_features.py` of CTScanGaze): stored voxel order, HU window
[-175, 250] -> [0, 1], symmetric zero padding to 96, MONAI window placement, per-cell average.

Throughput: N loader threads read and decode the next volumes while the device encodes the current
one and a writer thread writes the previous one (`extract_directory`); the summary reports how long
the device waited for input.

Safety for long batch jobs: outputs are written to temporary files and renamed only once both
arrays exist, then the manifest entry is written (atomically, after every volume); a re-run skips
volumes whose source sha256, settings and weights hash match the manifest; a bad file (corrupt or
truncated, not NIfTI, 4D, NaN voxels) is reported with its name and the rest still run.

Library entry points: `extract_directory(cts_dir, out_dir, weights, config, limit=None)` and
`extract_volume(path, out_dir, weights, config)`. `weights` is a converted weights file
(`ctsearcher convert-monai`) or `"random"` (seeded random initialisation, `config.feature_size`,
recorded as random in the manifest).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from ctsearcher_jax.config import ExtractConfig
from ctsearcher_jax.data import manifest as mf
from ctsearcher_jax.data.nifti import is_nifti_name, volume_name
from ctsearcher_jax.errors import CTSearcherError, DataError, WeightsError
from ctsearcher_jax.io import atomic_save_npy
from ctsearcher_jax.logs import progress_bars
from ctsearcher_jax.paths import child_path
from ctsearcher_jax.runtime.multihost import agree_on_error
from feature_extraction import swin_unetr
from feature_extraction import weights as wts
from feature_extraction.merge import merge_windows
from feature_extraction.preprocess import load_volume
from feature_extraction.sliding_window import WindowEncoder, pad_volume, plan_windows, process_share

_log = logging.getLogger(__name__)

HIDDEN_SUFFIX = "_hidden_states_out_4"


# ----------------------------------------------------------------------------- the encoder

@dataclasses.dataclass
class Extractor:
    """A ready encoder plus what the manifest says about it.

    Attributes:
      encoder: the jit-compiled, sharded window encoder.
      weights: manifest record: kind ("file" or "random"), sha256, path or seed, feature_size,
        merging_order.
      config: the extraction settings it was built for.
      compile_seconds: the encoder's compilation (or its load from the persistent cache), by `warmup`.
    """

    encoder: WindowEncoder
    weights: dict[str, Any]
    config: ExtractConfig
    compile_seconds: float = 0.0
    _warm: bool = False

    def warmup(self) -> None:
        """Compile the encoder ahead of time so encode timings exclude compilation (no batch is
        run for it: `compile_seconds` is the compilation alone, or loading it from the cache)."""
        if self._warm:
            return
        self.compile_seconds = self.encoder.compile()
        self._warm = True


def _settings(config: ExtractConfig, weights: dict[str, Any]) -> dict[str, Any]:
    """What decides the numbers (the batch size does not)."""
    return {"roi": config.roi, "overlap": config.overlap, "hu_min": config.hu_min,
            "hu_max": config.hu_max, "merge": config.merge, "canonical": config.canonical,
            "compute_dtype": config.dtype, "feature_size": weights["feature_size"],
            "merging_order": weights["merging_order"]}


def build_extractor(weights: str | os.PathLike[str], config: ExtractConfig, *, seed: int = 0,
                    devices: Any = None) -> Extractor:
    """Load (or randomly initialise) the Swin UNETR encoder and wrap it for windowed extraction.

    Args:
      weights: a converted weights file, or "random".
      config: feature_size and merging_order apply to random weights (a file carries its own,
        which replace them); dtype, roi, batch and the rest apply to both.
      seed: initialisation seed of random weights.
    """
    if str(weights) == "random":
        cfg = swin_unetr.SwinUNETRConfig(feature_size=config.feature_size,
                                         merging_order=config.merging_order, dtype=config.dtype)
        model = swin_unetr.SwinUNETR(cfg, rngs=nnx.Rngs(seed), parts="encoder")
        flat = {".".join(map(str, p)): np.asarray(v.get_value())
                for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
        record = {"kind": "random", "seed": seed, "sha256": wts.params_sha256(flat)}
    else:
        path = Path(weights)
        if path.suffix.lower() in (".pt", ".pth", ".ckpt"):
            raise WeightsError(f"{path}: a PyTorch checkpoint; convert it first with `ctsearcher "
                               f"convert-monai {path} --out {path.with_suffix('.safetensors')}` "
                               "and pass the .safetensors file")
        model = wts.load_model(path, parts="encoder", dtype=config.dtype)
        cfg = model.config
        # The file decides the architecture; keep the config consistent with it.
        config = dataclasses.replace(config, feature_size=cfg.feature_size,
                                     merging_order=cfg.merging_order)
        record = {"kind": "file", "path": str(path.resolve()), "sha256": wts.file_sha256(path)}
    record.update(feature_size=cfg.feature_size, merging_order=cfg.merging_order)

    graphdef, params = nnx.split(model)

    def apply(params: Any, windows: Any) -> tuple[Any, Any]:
        hidden, dec4 = swin_unetr.encode_fn(graphdef, params, windows)
        return dec4, hidden[4]

    encoder = WindowEncoder(apply, params, roi=config.roi, batch_per_device=config.batch,
                            devices=devices)
    return Extractor(encoder=encoder, weights=record, config=config)


# The last extractor built, reused by later calls with the same weights and settings so that
# `extract_directory` called twice in one process (demo, predict, tests) compiles once.
_CACHE: dict[str, Any] = {}


def get_extractor(weights: str | os.PathLike[str], config: ExtractConfig, *, seed: int = 0) -> Extractor:
    """`build_extractor`, memoised on (weights file identity, seed, config) for one entry."""
    ident: Any = "random"
    if str(weights) != "random":
        p = Path(weights)
        try:
            st = p.stat()
        except OSError:
            raise WeightsError(f"{p}: no such weights file; convert one with "
                               "`ctsearcher convert-monai` or pass --weights random") from None
        ident = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    key = repr((ident, seed, config))
    if _CACHE.get("key") != key:
        _CACHE.clear()
        _CACHE["extractor"] = build_extractor(weights, config, seed=seed)
        _CACHE["key"] = key
    return _CACHE["extractor"]


# ----------------------------------------------------------------------------- one volume

@dataclasses.dataclass
class VolumeResult:
    """What happened to one CT."""

    name: str
    source: str
    skipped: bool
    windows: int = 0
    seconds: float = 0.0
    entry: dict[str, Any] | None = None


def output_paths(out_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """`(<name>.npy, <name>_hidden_states_out_4.npy)` in `out_dir`."""
    return child_path(out_dir, name, ".npy"), child_path(out_dir, name, f"{HIDDEN_SUFFIX}.npy")


def _write_pair(paths: tuple[Path, Path], arrays: tuple[np.ndarray, np.ndarray]) -> None:
    """Write both arrays to temporary names, then rename both: never one without the other."""
    staged = [p.with_name(f".{p.name}.staged") for p in paths]
    try:
        for tmp, arr in zip(staged, arrays):
            atomic_save_npy(tmp, arr)
        for tmp, final in zip(staged, paths):
            os.replace(tmp, final)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclasses.dataclass
class _Prepared:
    """A volume read from disk (or found up to date), ready for the encoder."""

    path: Path
    name: str
    size: int
    digest: str
    skip_entry: dict[str, Any] | None = None
    volume: Any = None


def _prepare(path: Path, out_dir: Path, extractor: Extractor, known: dict[str, Any],
             force: bool, keep_others: bool = False) -> _Prepared:
    """Hash `path`; load and scale it unless `known` (every manifest entry) already has it unchanged.

    keep_others: refuse (DataError naming the recorded weights) instead of replacing features that
    were made with other weights or settings (`predict` sharing a cache made by `extract`).
    Runs in a background thread for the next volume while the current one is encoded (hashing
    and gzip decompression release the GIL), so the accelerator does not wait for the disk.
    """
    config = extractor.config
    name = volume_name(path)
    try:
        size = path.stat().st_size
        digest = mf.file_sha256(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    settings = _settings(config, extractor.weights)
    if not force and mf.entry_is_current(known.get(name), source_sha256=digest, settings=settings,
                                         weights_sha256=extractor.weights["sha256"], out_dir=out_dir):
        return _Prepared(path, name, size, digest, skip_entry=known[name])
    entry = known.get(name)
    if keep_others and entry and (not mf.same_weights(entry, extractor.weights)
                                  or entry.get("settings") != settings):
        what = ("other settings" if mf.same_weights(entry, extractor.weights)
                else mf.describe_weights(entry.get("weights")))
        raise DataError(f"{output_paths(out_dir, name)[0]}: made with {what}; not replaced by "
                        f"features of {mf.describe_weights(extractor.weights)}. Use the same "
                        "weights, or a separate feature folder")
    volume = load_volume(path, hu_min=config.hu_min, hu_max=config.hu_max, canonical=config.canonical)
    return _Prepared(path, name, size, digest, volume=volume)


@dataclasses.dataclass
class _Encoded:
    """A volume's window features, ready to merge and write (what the writer thread gets)."""

    prep: _Prepared
    plan: Any
    dec4_cells: np.ndarray
    hidden_cells: np.ndarray
    spacing: tuple[float, ...]
    seconds: float
    input_wait_seconds: float = 0.0


def _encode(prep: _Prepared, extractor: Extractor,
            on_windows: Callable[[int, int], None] | None = None) -> _Encoded:
    """Run the encoder over every window of a prepared volume (compiles on the first call)."""
    config, volume = extractor.config, prep.volume
    plan = plan_windows(volume.array.shape, config.roi, config.overlap)
    extractor.warmup()
    if on_windows is not None:
        on_windows(0, plan.num_windows)
    t0 = time.perf_counter()
    dec4_cells, hidden_cells = extractor.encoder.encode_volume(
        pad_volume(volume.array, plan), plan.starts,
        on_batch=(lambda n: on_windows(n, plan.num_windows)) if on_windows else None)
    seconds = time.perf_counter() - t0
    return _Encoded(prep, plan, dec4_cells, hidden_cells, tuple(volume.spacing), seconds)


def _write_encoded(enc: _Encoded, out_dir: Path, extractor: Extractor, own: dict[str, Any],
                   manifest_file: Path) -> VolumeResult:
    """Merge the window features, write the pair of arrays, then add the entry to `own` and write it.

    Runs on the writer thread in `extract_directory` (one writer, so manifest writes never race).
    """
    config, prep, plan = extractor.config, enc.prep, enc.plan
    dec4 = merge_windows(enc.dec4_cells, plan.starts, plan.padded_shape, config.merge)
    hidden = merge_windows(enc.hidden_cells, plan.starts, plan.padded_shape, config.merge)
    if not (np.isfinite(dec4).all() and np.isfinite(hidden).all()):
        raise DataError(f"{prep.path}: the encoder produced NaN/inf features (weights or dtype "
                        "problem); nothing written")
    paths = output_paths(out_dir, prep.name)
    _write_pair(paths, (dec4, hidden))
    entry = {
        "source": str(prep.path.resolve()), "source_size": prep.size, "source_sha256": prep.digest,
        "volume_shape": list(plan.shape), "padded_shape": list(plan.padded_shape),
        "grid_shape": list(plan.grid_shape), "spacing": list(enc.spacing),
        "channels": int(dec4.shape[0]), "windows": plan.num_windows,
        "weights": dict(extractor.weights), "settings": _settings(config, extractor.weights),
        "dtype": "float32",
        "outputs": {"dec4": paths[0].name, "hidden_states_out_4": paths[1].name},
        "created": _now(),
        # How long the encoder ran for this CT and how long it waited for the CT to be decoded
        # (informative only; never compared when deciding whether features are current).
        "timing": {"encode_seconds": round(enc.seconds, 3),
                   "input_wait_seconds": round(enc.input_wait_seconds, 3)},
    }
    own[prep.name] = entry
    mf.write_manifest(manifest_file, own)
    return VolumeResult(name=prep.name, source=str(prep.path), skipped=False,
                        windows=plan.num_windows, seconds=enc.seconds, entry=entry)


def _encode_and_write(prep: _Prepared, out_dir: Path, extractor: Extractor, own: dict[str, Any],
                      manifest_file: Path,
                      on_windows: Callable[[int, int], None] | None = None) -> VolumeResult:
    """Encode a prepared volume and write it (or return its skip result), in this thread."""
    if prep.skip_entry is not None:
        return VolumeResult(name=prep.name, source=str(prep.path), skipped=True, entry=prep.skip_entry)
    return _write_encoded(_encode(prep, extractor, on_windows), out_dir, extractor, own,
                          manifest_file)


def extract_volume(path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   weights: str | os.PathLike[str] = "random", config: ExtractConfig | None = None,
                   *, seed: int = 0, force: bool = False, keep_others: bool = False,
                   extractor: Extractor | None = None,
                   process: tuple[int, int] | None = None) -> VolumeResult:
    """Extract one CT into `out_dir` (skipped when the manifest already holds it unchanged).

    keep_others: never replace features made with other weights or settings (DataError instead).
    process: (index, count) when several processes extract into `out_dir` at once (`predict`
      over many CTs): the entry goes to this process's manifest part, which process 0 merges
      (`manifest.merge_parts`) once every process is done.

    Raises:
      DataError: the file is unusable (named in the message); nothing is written for it.
      WeightsError: the weights cannot be loaded.
    """
    config = extractor.config if extractor is not None else (config or ExtractConfig())
    path, out_dir = Path(path), Path(out_dir)
    if not is_nifti_name(path):
        raise DataError(f"{path}: not a NIfTI file (.nii/.nii.gz); convert it first")
    out_dir.mkdir(parents=True, exist_ok=True)
    extractor = extractor or get_extractor(weights, config, seed=seed)
    if process is not None and process[1] > 1:
        manifest_file = mf.manifest_path(out_dir, *process)
        own = mf.read_part(manifest_file)
    else:
        manifest_file = mf.manifest_path(out_dir)
        if any(out_dir.glob(mf.PART_GLOB)):
            mf.merge_parts(out_dir)  # leftovers of a multi-process run
        own = None
    manifest = mf.read_manifest(out_dir)
    prep = _prepare(path, out_dir, extractor, manifest, force, keep_others)
    return _encode_and_write(prep, out_dir, extractor, manifest if own is None else own,
                             manifest_file)


# ----------------------------------------------------------------------------- a directory

# Above this share of the encoder loop spent waiting for decoded volumes, a run is decode-bound.
DECODE_BOUND_FRACTION = 0.10


def default_workers() -> int:
    """Loader threads when not told: half the CPU cores (the rest feed the device), 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@dataclasses.dataclass
class VolumeTiming:
    """Per-CT timing of the encoder loop.

    encode_seconds: the encoder's time on this CT's windows (compilation excluded).
    input_wait_seconds: how long the loop waited for this CT to be read and decoded (0 when it
      was ready); the wait for the very first CT (filling the pipeline) is reported separately.
    """

    name: str
    windows: int
    encode_seconds: float
    input_wait_seconds: float

    @property
    def device_wait_fraction(self) -> float:
        busy = self.encode_seconds + self.input_wait_seconds
        return self.input_wait_seconds / busy if busy > 0 else 0.0


@dataclasses.dataclass
class ExtractSummary:
    """Outcome of `extract_directory`.

    Attributes:
      processed / skipped: names extracted now / already up to date.
      failed: `(file, message)` for every file that could not be used.
      windows: windows encoded now; encode_seconds: time spent encoding them (compile excluded).
      compile_seconds: first-call compilation; seconds: wall time of the whole call.
      workers: loader threads; timings: per encoded CT (`VolumeTiming`).
      first_input_seconds: the wait for the first CT (the pipeline filling; not in the fraction).
      input_wait_seconds: every later wait of the encoder loop for a CT to be decoded (or hashed).
    """

    out_dir: str
    processed: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    windows: int = 0
    encode_seconds: float = 0.0
    compile_seconds: float = 0.0
    seconds: float = 0.0
    workers: int = 1
    timings: list[VolumeTiming] = dataclasses.field(default_factory=list)
    first_input_seconds: float = 0.0
    input_wait_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def windows_per_second(self) -> float:
        return self.windows / self.encode_seconds if self.encode_seconds > 0 else 0.0

    @property
    def device_wait_fraction(self) -> float:
        """Share of the encoder loop (encoding + waiting; compilation and the first fill excluded)
        spent waiting for decoded input."""
        busy = self.encode_seconds + self.input_wait_seconds
        return self.input_wait_seconds / busy if busy > 0 else 0.0

    @property
    def decode_bound(self) -> bool:
        return self.windows > 0 and self.device_wait_fraction > DECODE_BOUND_FRACTION

    def lines(self) -> list[str]:
        """Human-readable closing summary."""
        out = [f"extracted {len(self.processed)}, skipped {len(self.skipped)} (up to date), "
               f"failed {len(self.failed)} -> {self.out_dir}",
               f"{self.windows} windows in {self.encode_seconds:.1f} s = "
               f"{self.windows_per_second:.2f} windows/s (compile {self.compile_seconds:.1f} s, "
               f"total {self.seconds:.1f} s)"]
        if self.windows:
            out.append(f"input: {self.workers} loader worker(s); the device waited on input "
                       f"{100 * self.device_wait_fraction:.1f} % of the encoder loop "
                       f"({self.input_wait_seconds:.1f} s; first CT ready after "
                       f"{self.first_input_seconds:.1f} s)")
        if self.decode_bound:
            out.append(f"decode-bound: reading and decoding the NIfTI files could not keep up "
                       f"(> {100 * DECODE_BOUND_FRACTION:.0f} % waiting); give more --workers "
                       f"(now {self.workers}) if CPU cores are free, or store the CTs on faster "
                       "disk / uncompressed")
        out += [f"FAILED {_with_file(f, m)}" for f, m in self.failed]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (`extract --summary-json`), per-CT timings included."""
        return {
            "out_dir": self.out_dir, "processed": self.processed, "skipped": self.skipped,
            "failed": [{"file": f, "message": m} for f, m in self.failed],
            "windows": self.windows, "encode_seconds": self.encode_seconds,
            "windows_per_second": self.windows_per_second,
            "compile_seconds": self.compile_seconds, "seconds": self.seconds,
            "workers": self.workers, "first_input_seconds": self.first_input_seconds,
            "input_wait_seconds": self.input_wait_seconds,
            "device_wait_fraction": self.device_wait_fraction, "decode_bound": self.decode_bound,
            "volumes": [dict(dataclasses.asdict(t), device_wait_fraction=t.device_wait_fraction)
                        for t in self.timings],
        }


def _with_file(file: str, message: str) -> str:
    """`file: message`, unless the message already starts with the file name."""
    return message if message.startswith(file) else f"{file}: {message}"


def list_volumes(cts_dir: str | os.PathLike[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """NIfTI files of `cts_dir` (sorted) and `(file, message)` for files that are not NIfTI.

    Hidden files (`.name`) and subdirectories are ignored. Two files that map to the same output
    name (`a.nii` and `a.nii.gz`) are refused (both reported).
    """
    cts_dir = Path(cts_dir)
    if not cts_dir.is_dir():
        raise DataError(f"{cts_dir}: no such directory; --cts must be a folder of .nii/.nii.gz CTs")
    files, bad = [], []
    for p in sorted(cts_dir.iterdir()):
        if p.name.startswith(".") or p.is_dir():
            continue
        if is_nifti_name(p):
            files.append(p)
        else:
            bad.append((str(p), "not a NIfTI file (.nii/.nii.gz); convert it or move it out of "
                                 f"{cts_dir}"))
    by_name: dict[str, list[Path]] = {}
    for p in files:
        by_name.setdefault(volume_name(p), []).append(p)
    clashes = {n: ps for n, ps in by_name.items() if len(ps) > 1}
    for n, ps in clashes.items():
        for p in ps:
            bad.append((str(p), f"{' and '.join(q.name for q in ps)} would both be written as "
                                f"'{n}.npy'; rename one"))
    files = [p for p in files if volume_name(p) not in clashes]
    if not files and not bad:
        raise DataError(f"{cts_dir}: no .nii/.nii.gz files found; point --cts at the CT folder")
    return files, bad


def extract_directory(cts_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      weights: str | os.PathLike[str] = "random", config: ExtractConfig | None = None,
                      limit: int | None = None, *, seed: int = 0, force: bool = False,
                      progress: bool = True, echo: Callable[[str], None] | None = None,
                      extractor: Extractor | None = None, workers: int | None = None) -> ExtractSummary:
    """Extract every CT of `cts_dir` into `out_dir` and return a summary (never raises per file).

    The pipeline: `workers` loader threads hash, read, decode and HU-scale the next volumes
    (`workers + 1` volumes in flight: reading gzip, NIfTI decoding and NumPy scaling release the
    GIL), the calling thread feeds the device (windows are cut on the device), and one writer
    thread merges window features and writes the arrays and the manifest, so the device goes on
    with the next CT while the last one is written. The summary says how long the device waited
    for decoded input, per CT and overall, and whether the run was decode-bound.

    Args:
      weights: converted weights file or "random".
      limit: only the first `limit` CTs (sorted by file name).
      force: re-extract volumes the manifest already holds.
      progress: tqdm bars for volumes and windows when stderr is a terminal; otherwise (and with
        progress=False) one plain log line per CT (`ctsearcher_jax.logs`).
      echo: where to report per-file failures as they happen (default: this module's logger).
      extractor: a prebuilt `Extractor` (then `weights`, `seed` and `config` come from it).
      workers: loader threads (default `default_workers()`: half the CPU cores, 1 to 8).
    Raises:
      DataError: `cts_dir` is missing or has no files at all.
      WeightsError: the weights cannot be loaded.
    """
    t_start = time.perf_counter()
    config = extractor.config if extractor is not None else (config or ExtractConfig())
    echo = echo or _log.error
    bars = progress_bars(progress)
    workers = default_workers() if not workers else int(workers)
    if workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    files, bad = list_volumes(cts_dir)
    if limit is not None:
        files = files[:max(limit, 0)]
    pidx, pcount = jax.process_index(), jax.process_count()
    files = process_share(files, pidx, pcount)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ExtractSummary(out_dir=str(out_dir), workers=workers)
    summary.failed.extend(bad if pidx == 0 else [])
    for f, m in summary.failed:
        echo(_with_file(f, m))

    setup_error = None
    if extractor is None and files:  # no encoder needed when this process has nothing to read
        try:
            extractor = get_extractor(weights, config, seed=seed)
        except CTSearcherError as exc:
            setup_error = exc
    # Every process learns whether any process could not load the weights, and all stop with
    # the same error (alone, the others would wait at the final barrier until a timeout).
    agree_on_error(setup_error)
    if pcount == 1 and any(out_dir.glob(mf.PART_GLOB)):
        mf.merge_parts(out_dir)  # leftovers of a multi-process run
    manifest_file = mf.manifest_path(out_dir, pidx, pcount)
    known = mf.read_manifest(out_dir)
    own = mf.read_part(manifest_file)  # from here on only the writer thread touches it

    vol_bar = tqdm(files, desc="volumes", unit="ct", disable=not bars, position=0)
    win_bar = tqdm(total=0, desc="windows", unit="win", disable=not bars, position=1, leave=False)

    def on_windows(n: int, total: int) -> None:
        if n == 0:
            win_bar.reset(total=total)
        else:
            win_bar.update(n)

    def fail(path: Path | str, exc: BaseException) -> None:
        if isinstance(exc, CTSearcherError):
            msg = str(exc)
        else:  # an unexpected failure of one volume must not stop the batch
            msg = f"{type(exc).__name__}: {exc} (unexpected error: please report it)"
        summary.failed.append((str(path), msg))
        echo(_with_file(str(path), msg))

    writes: list[tuple[Path, Any, VolumeTiming]] = []  # in submission order (one writer: FIFO)

    def collect(wait_all: bool) -> None:
        while writes and (wait_all or writes[0][1].done()):
            path, future, timing = writes.pop(0)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - reported per file
                fail(path, exc)
                continue
            summary.processed.append(result.name)
            summary.windows += result.windows
            summary.encode_seconds += result.seconds
            summary.timings.append(timing)

    loaders = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ct-load")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ct-write")
    ahead = workers + 1  # volumes being read or waiting, ahead of the encoder
    pending: dict[int, Any] = {}

    def submit(i: int) -> None:
        if i < len(files):
            pending[i] = loaders.submit(_prepare, files[i], out_dir, extractor, known, force)

    for i in range(ahead):
        submit(i)
    fatal: BaseException | None = None
    try:
        for i, path in enumerate(vol_bar):
            vol_bar.set_postfix_str(path.name)
            t_wait = time.perf_counter()
            try:
                prep = pending.pop(i).result()
            except Exception as exc:  # noqa: BLE001 - reported per file
                fail(path, exc)
                continue
            finally:
                waited = time.perf_counter() - t_wait
                if i == 0:
                    summary.first_input_seconds = waited
                else:
                    summary.input_wait_seconds += waited
                submit(i + ahead)
            if prep.skip_entry is not None:
                summary.skipped.append(prep.name)
                if not bars:
                    _log.info(f"CT {i + 1}/{len(files)} {path.name}: up to date, skipped")
                continue
            try:
                encoded = _encode(prep, extractor, on_windows=on_windows if bars else None)
            except Exception as exc:  # noqa: BLE001 - reported per file
                fail(path, exc)
                continue
            finally:
                prep.volume = None  # the decoded volume is no longer needed: free it now
            encoded.input_wait_seconds = waited if i else 0.0
            if not bars:
                _log.info(f"CT {i + 1}/{len(files)} {path.name}: {encoded.plan.num_windows} "
                          f"windows in {encoded.seconds:.1f} s")
            timing = VolumeTiming(prep.name, encoded.plan.num_windows, encoded.seconds,
                                  encoded.input_wait_seconds)
            writes.append((path, writer.submit(_write_encoded, encoded, out_dir, extractor, own,
                                               manifest_file), timing))
            collect(wait_all=False)
        collect(wait_all=True)
    except BaseException as exc:  # noqa: BLE001 - told to the other processes below, then raised
        fatal = exc
    finally:
        for future in pending.values():
            future.cancel()
        loaders.shutdown(wait=True)
        writer.shutdown(wait=True)  # a started write always finishes: never half a pair
    win_bar.close()
    vol_bar.close()
    # The final barrier, which also tells every process whether one stopped early (interrupted,
    # manifest not writable): then all raise the same error instead of waiting for it.
    agree_on_error(fatal)
    if pcount > 1 and pidx == 0:
        mf.merge_parts(out_dir)
    summary.compile_seconds = extractor.compile_seconds if extractor is not None else 0.0
    summary.seconds = time.perf_counter() - t_start
    return summary
