"""Feature extraction over a directory of CT volumes: a pipeline of loader threads, the device
and one writer thread (`extract_directory`), and its summary.

`workers` loader threads hash, read, decode and HU-scale the next volumes (`workers + 1` volumes in
flight: reading gzip, NIfTI decoding and NumPy scaling release the GIL), within a memory budget
(`memory_budget.MemoryBudget`: the decoded volumes held at once, sized from their headers before
a voxel is read; every header is checked before the encoder is built), the calling thread feeds
the device (windows are cut on the device), and one writer thread merges window features and
writes the arrays and the manifest, so the device goes on with the next CT while the last one is
written. The summary says how long the device waited for decoded input, per CT and overall, and
whether the run was decode-bound. One volume's steps (prepare, encode, write) are in
`feature_extraction/extract.py`.

Code shape: `setup_directory` resolves the files, the encoder and the manifests into a
`DirectoryRun`; `_Pipeline.run` is the loop over its files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jax
from tqdm import tqdm

from ctsearcher_jax.config import ExtractConfig
from ctsearcher_jax.data import manifest as mf
from ctsearcher_jax.data.nifti import is_nifti_name, open_nifti, volume_name
from ctsearcher_jax.errors import CTSearcherError, DataError
from ctsearcher_jax.logs import progress_bars
from ctsearcher_jax.runtime.multihost import agree_on_error
from feature_extraction.extract import (
    Extractor,
    PreparedVolume,
    encode_volume,
    get_extractor,
    prepare_volume,
    write_encoded,
)
from feature_extraction.memory_budget import GB, MemoryBudget, default_budget_bytes
from feature_extraction.sliding_window import process_share

_log = logging.getLogger(__name__)

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
      memory_budget_bytes / memory_peak_bytes: the loaders' budget of decoded volumes held at
        once, and the most they held (`memory_budget.MemoryBudget`).
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
    memory_budget_bytes: int = 0
    memory_peak_bytes: int = 0

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
            out.append(f"memory: at most {_size(self.memory_peak_bytes)} of decoded volumes "
                       f"held at once (budget {_size(self.memory_budget_bytes)}, --memory-budget)")
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
            "memory_budget_bytes": self.memory_budget_bytes,
            "memory_peak_bytes": self.memory_peak_bytes,
            "volumes": [dict(dataclasses.asdict(t), device_wait_fraction=t.device_wait_fraction)
                        for t in self.timings],
        }


def _size(nbytes: int) -> str:
    """`1.23 GB` or, below a GB, `12.3 MB`."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 1e6:.1f} MB"


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
        raise DataError(f"{cts_dir}: no such directory; expected a folder of .nii/.nii.gz CTs")
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
        raise DataError(f"{cts_dir}: no .nii/.nii.gz files found; expected the folder of CT volumes")
    return files, bad


def extract_directory(cts_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      weights: str | os.PathLike[str] = "random", config: ExtractConfig | None = None,
                      limit: int | None = None, *, seed: int = 0, force: bool = False,
                      progress: bool = True, echo: Callable[[str], None] | None = None,
                      extractor: Extractor | None = None, workers: int | None = None) -> ExtractSummary:
    """Extract every CT of `cts_dir` into `out_dir` and return a summary (never raises per file).

    The pipeline is the module docstring's.

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
    run = setup_directory(cts_dir, out_dir, weights, config, limit, seed=seed, force=force,
                          progress=progress, echo=echo, extractor=extractor, workers=workers)
    fatal = _Pipeline(run).run()
    # The final barrier, which also tells every process whether one stopped early (interrupted,
    # manifest not writable): then all raise the same error instead of waiting for it.
    agree_on_error(fatal)
    if run.process_count > 1 and run.process_index == 0:
        mf.merge_parts(run.out_dir)
    summary = run.summary
    summary.compile_seconds = run.extractor.compile_seconds if run.extractor is not None else 0.0
    summary.seconds = time.perf_counter() - t_start
    return summary


@dataclasses.dataclass
class DirectoryRun:
    """What `extract_directory` works on: this process's files, the encoder and the manifests.

    known: every manifest entry of `out_dir` (read once, by the loaders); own: this process's
    manifest entries (`manifest_file`), which only the writer thread touches.
    """

    files: list[Path]
    out_dir: Path
    extractor: Extractor | None
    known: dict[str, Any]
    own: dict[str, Any]
    manifest_file: Path
    summary: ExtractSummary
    force: bool
    bars: bool
    echo: Callable[[str], None]
    process_index: int
    process_count: int

    def fail(self, path: Path | str, exc: BaseException) -> None:
        """Record (and report) one file that could not be used; the batch goes on."""
        if isinstance(exc, CTSearcherError):
            msg = str(exc)
        else:  # an unexpected failure of one volume must not stop the batch
            msg = f"{type(exc).__name__}: {exc} (unexpected error: please report it)"
        self.summary.failed.append((str(path), msg))
        self.echo(_with_file(str(path), msg))


def setup_directory(cts_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    weights: str | os.PathLike[str], config: ExtractConfig | None,
                    limit: int | None, *, seed: int, force: bool, progress: bool,
                    echo: Callable[[str], None] | None, extractor: Extractor | None,
                    workers: int | None) -> DirectoryRun:
    """List this process's share of the CTs, load the encoder (every process agrees on a failure
    to load it) and read the manifests; report the files that are not CTs."""
    config = extractor.config if extractor is not None else (config or ExtractConfig())
    echo = echo or _log.error
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
    budget = int(config.memory_budget_gb * GB) if config.memory_budget_gb else default_budget_bytes()
    summary = ExtractSummary(out_dir=str(out_dir), workers=workers, memory_budget_bytes=budget)
    summary.failed.extend(bad if pidx == 0 else [])
    files = _checked_headers(files, config.max_voxels, summary.failed)
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
    return DirectoryRun(files, out_dir, extractor, known=mf.read_manifest(out_dir),
                        own=mf.read_part(manifest_file), manifest_file=manifest_file,
                        summary=summary, force=force, bars=progress_bars(progress), echo=echo,
                        process_index=pidx, process_count=pcount)


def _checked_headers(files: list[Path], max_voxels: int, failed: list[tuple[str, str]]) -> list[Path]:
    """The files whose header passes the voxel policy (`data.nifti.open_nifti`: a few hundred
    bytes each); the others go to `failed`, before the encoder is built or a voxel is read."""
    good = []
    for path in files:
        try:
            open_nifti(path, max_voxels=max_voxels)
        except DataError as exc:
            failed.append((str(path), str(exc)))
            continue
        good.append(path)
    return good


class _Pipeline:
    """The loader threads, the encoder loop (this thread) and the writer thread of one run."""

    def __init__(self, run: DirectoryRun):
        self.run_ = run
        workers = run.summary.workers
        self.loaders = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ct-load")
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ct-write")
        self.ahead = workers + 1  # volumes being read or waiting, ahead of the encoder
        self.budget = MemoryBudget(run.summary.memory_budget_bytes)
        self.pending: dict[int, Future] = {}
        self.writes: list[tuple[Path, Future, VolumeTiming]] = []  # submission order (FIFO)
        self.vol_bar = tqdm(run.files, desc="volumes", unit="ct", disable=not run.bars, position=0)
        self.win_bar = tqdm(total=0, desc="windows", unit="win", disable=not run.bars, position=1,
                            leave=False)

    def run(self) -> BaseException | None:
        """Every file through load -> encode -> write; the error that stopped the loop, if any
        (per-file errors are recorded in the summary, never raised)."""
        for i in range(self.ahead):
            self._submit(i)
        fatal: BaseException | None = None
        try:
            for i, path in enumerate(self.vol_bar):
                self._one(i, path)
            self._collect(wait_all=True)
        except BaseException as exc:  # noqa: BLE001 - told to the other processes, then raised
            fatal = exc
        finally:
            for future in self.pending.values():
                future.cancel()
            self.budget.close()  # loaders waiting for room end now
            self.loaders.shutdown(wait=True)
            self.writer.shutdown(wait=True)  # a started write always finishes: never half a pair
            self.win_bar.close()
            self.vol_bar.close()
            self.run_.summary.memory_peak_bytes = self.budget.peak
        return fatal

    def _submit(self, i: int) -> None:
        if i < len(self.run_.files):
            self.pending[i] = self.loaders.submit(self._load, i)

    def _load(self, i: int) -> PreparedVolume:
        """Volume i on a loader thread: `prepare_volume` within the memory budget (its turn in
        file order; the bytes stay held until the encoder is done with it, or it fails)."""
        run, held = self.run_, 0

        def reserve(info: Any) -> None:
            nonlocal held
            nbytes = info.decoded_bytes(run.extractor.config.canonical)
            self.budget.reserve(i, nbytes, info.path)
            held = nbytes

        try:
            prep = prepare_volume(run.files[i], run.out_dir, run.extractor, run.known, run.force,
                                  reserve=reserve)
        except BaseException:
            self.budget.release(held)
            raise
        finally:
            if not held:
                self.budget.skip(i)
        prep.reserved = held
        return prep

    def _on_windows(self, n: int, total: int) -> None:
        if n == 0:
            self.win_bar.reset(total=total)
        else:
            self.win_bar.update(n)

    def _wait_for(self, i: int, path: Path) -> tuple[PreparedVolume | None, float]:
        """Volume i as the loaders left it (None when it failed) and how long this waited."""
        summary = self.run_.summary
        t_wait = time.perf_counter()
        try:
            return self.pending.pop(i).result(), time.perf_counter() - t_wait
        except Exception as exc:  # noqa: BLE001 - reported per file
            self.run_.fail(path, exc)
            return None, time.perf_counter() - t_wait
        finally:
            waited = time.perf_counter() - t_wait
            if i == 0:
                summary.first_input_seconds = waited
            else:
                summary.input_wait_seconds += waited
            self._submit(i + self.ahead)

    def _one(self, i: int, path: Path) -> None:
        """Encode volume i on this thread and hand it to the writer (or record a skip/failure)."""
        run, total = self.run_, len(self.run_.files)
        self.vol_bar.set_postfix_str(path.name)
        prep, waited = self._wait_for(i, path)
        if prep is None:
            return
        if prep.skip_entry is not None:
            run.summary.skipped.append(prep.name)
            if not run.bars:
                _log.info(f"CT {i + 1}/{total} {path.name}: up to date, skipped")
            return
        try:
            encoded = encode_volume(prep, run.extractor,
                                    on_windows=self._on_windows if run.bars else None)
        except Exception as exc:  # noqa: BLE001 - reported per file
            run.fail(path, exc)
            return
        finally:
            prep.volume = None  # the decoded volume is no longer needed: free it now
            self.budget.release(prep.reserved)
        encoded.input_wait_seconds = waited if i else 0.0
        if not run.bars:
            _log.info(f"CT {i + 1}/{total} {path.name}: {encoded.plan.num_windows} "
                      f"windows in {encoded.seconds:.1f} s")
        timing = VolumeTiming(prep.name, encoded.plan.num_windows, encoded.seconds,
                              encoded.input_wait_seconds)
        self.writes.append((path, self.writer.submit(write_encoded, encoded, run.out_dir,
                                                     run.extractor, run.own, run.manifest_file),
                            timing))
        self._collect(wait_all=False)

    def _collect(self, wait_all: bool) -> None:
        """Record the finished writes, in submission order (all of them with `wait_all`)."""
        summary = self.run_.summary
        while self.writes and (wait_all or self.writes[0][1].done()):
            path, future, timing = self.writes.pop(0)
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - reported per file
                self.run_.fail(path, exc)
                continue
            summary.processed.append(result.name)
            summary.windows += result.windows
            summary.encode_seconds += result.seconds
            summary.timings.append(timing)
