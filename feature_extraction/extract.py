"""Feature extraction of one CT volume: load, window, encode, merge, write; and the encoder.

For every `<name>.nii[.gz]` this writes, into the output directory,
`<name>.npy` (merged dec4, `(16*feature_size, gi, gj, gk)` float32, `gi = padded_I // 32`),
`<name>_hidden_states_out_4.npy` (the merged last SwinViT stage, same shape) and an entry of
`manifest.json` (see `ctsearcher_jax.data.manifest`). The procedure is the original's
(`swin_unet_extract_feature.py` + `merge_features.py` of CTScanGaze): stored voxel order, HU window
[-175, 250] -> [0, 1], symmetric zero padding to 96, MONAI window placement, per-cell average.

The steps of one volume (`prepare_volume`: hash and decode; `encode_volume`: the device;
`write_encoded`: merge and write) are what the directory pipeline (`feature_extraction/directory.py`,
`extract_directory`) runs on its loader threads, its own thread and its writer thread.

Safety for long batch jobs: outputs are written to temporary files and renamed only once both
arrays exist, then the manifest entry is written (atomically, after every volume); a re-run skips
volumes whose source sha256, settings and weights hash match the manifest; a bad file (corrupt or
truncated, not NIfTI, 4D, NaN voxels) is reported with its name and the rest still run.

Library entry point: `extract_volume(path, out_dir, weights, config)` (a folder:
`feature_extraction.directory.extract_directory`). `weights` is a converted weights file
(`ctsearcher convert-monai`) or `"random"` (seeded random initialisation, `config.feature_size`,
recorded as random in the manifest).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flax import nnx

from ctsearcher_jax.config import ExtractConfig
from ctsearcher_jax.data import manifest as mf
from ctsearcher_jax.data.nifti import NiftiInfo, is_nifti_name, open_nifti, volume_name
from ctsearcher_jax.errors import DataError, WeightsError
from ctsearcher_jax.io import atomic_save_npy, file_sha256
from ctsearcher_jax.paths import child_path
from feature_extraction import swin_unetr
from feature_extraction import weights as wts
from feature_extraction.merge import merge_windows
from feature_extraction.preprocess import load_volume
from feature_extraction.sliding_window import WindowEncoder, pad_volume, plan_windows

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
        record = {"kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}
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
                               "`ctsearcher convert-monai`, or use the weights 'random' (a seeded random-initialised "
                               "encoder, for testing)") from None
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
class PreparedVolume:
    """A volume read from disk (or found up to date), ready for the encoder."""

    path: Path
    name: str
    size: int
    digest: str
    skip_entry: dict[str, Any] | None = None
    volume: Any = None
    reserved: int = 0  # bytes of the loaders' memory budget this volume holds


def prepare_volume(path: Path, out_dir: Path, extractor: Extractor, known: dict[str, Any],
                   force: bool, keep_others: bool = False,
                   reserve: Callable[[NiftiInfo], None] | None = None) -> PreparedVolume:
    """Hash `path`; load and scale it unless `known` (every manifest entry) already has it unchanged.

    keep_others: refuse (DataError naming the recorded weights) instead of replacing features that
    were made with other weights or settings (`predict` sharing a cache made by `extract`).
    reserve: called with the checked header (`data.nifti.open_nifti`, `config.max_voxels`)
    before any voxel is read: the directory pipeline's memory budget waits there.
    Runs in a background thread for the next volume while the current one is encoded (hashing
    and gzip decompression release the GIL), so the accelerator does not wait for the disk.
    """
    config = extractor.config
    name = volume_name(path)
    try:
        size = path.stat().st_size
        digest = file_sha256(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    settings = _settings(config, extractor.weights)
    if not force and mf.entry_is_current(known.get(name), source_sha256=digest, settings=settings,
                                         weights_sha256=extractor.weights["sha256"], out_dir=out_dir):
        return PreparedVolume(path, name, size, digest, skip_entry=known[name])
    entry = known.get(name)
    if keep_others and entry and (not mf.same_weights(entry, extractor.weights)
                                  or entry.get("settings") != settings):
        what = ("other settings" if mf.same_weights(entry, extractor.weights)
                else mf.describe_weights(entry.get("weights")))
        raise DataError(f"{output_paths(out_dir, name)[0]}: made with {what}; not replaced by "
                        f"features of {mf.describe_weights(extractor.weights)}. Use the same "
                        "weights, or a separate feature folder")
    info = open_nifti(path, max_voxels=config.max_voxels)
    if reserve is not None:
        reserve(info)
    volume = load_volume(info, hu_min=config.hu_min, hu_max=config.hu_max, canonical=config.canonical)
    return PreparedVolume(path, name, size, digest, volume=volume)


@dataclasses.dataclass
class EncodedVolume:
    """A volume's window features, ready to merge and write (what the writer thread gets)."""

    prep: PreparedVolume
    plan: Any
    dec4_cells: np.ndarray
    hidden_cells: np.ndarray
    spacing: tuple[float, ...]
    seconds: float
    input_wait_seconds: float = 0.0


def encode_volume(prep: PreparedVolume, extractor: Extractor,
            on_windows: Callable[[int, int], None] | None = None) -> EncodedVolume:
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
    return EncodedVolume(prep, plan, dec4_cells, hidden_cells, tuple(volume.spacing), seconds)


def write_encoded(enc: EncodedVolume, out_dir: Path, extractor: Extractor, own: dict[str, Any],
                   manifest_file: Path) -> VolumeResult:
    """Merge the window features, write the pair of arrays, then add the entry to `own` and write it.

    Runs on the writer thread of `extract_directory` (one writer, so manifest writes never race).
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


def encode_and_write(prep: PreparedVolume, out_dir: Path, extractor: Extractor, own: dict[str, Any],
                      manifest_file: Path,
                      on_windows: Callable[[int, int], None] | None = None) -> VolumeResult:
    """Encode a prepared volume and write it (or return its skip result), in this thread."""
    if prep.skip_entry is not None:
        return VolumeResult(name=prep.name, source=str(prep.path), skipped=True, entry=prep.skip_entry)
    return write_encoded(encode_volume(prep, extractor, on_windows), out_dir, extractor, own,
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
    prep = prepare_volume(path, out_dir, extractor, manifest, force, keep_others)
    return encode_and_write(prep, out_dir, extractor, manifest if own is None else own,
                             manifest_file)
