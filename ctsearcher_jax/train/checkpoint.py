"""Orbax checkpoints of a training run: `<workdir>/checkpoints/<step>/{state,data,meta}`.

Each checkpoint holds
  state  the train state (model and optimizer variables, PRNG key), sharded arrays, in the
         layout `train.step.TrainState.checkpoint_tree()` gives (unchanged since the first
         release, so older checkpoints restore);
  data   the grain iterator state of every process (`process_<i>-of-<n>.json`);
  meta   JSON: step, epoch, number of training CTs, steps per epoch, the resolved config.

Saving is asynchronous (the step continues while files are written). Orbax writes a step into a
temporary directory and renames it when every item is committed, so a step killed half-way never
looks finalised: `latest_step()` skips it and the leftover temporary directory is deleted when the
next run opens the manager. Retention: the last `train.keep_last` steps plus the best
`train.keep_best` by `eval.best_metric` in its declared direction (checkpoints saved without
evaluation metrics, e.g. on SIGTERM, count only as "last").
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Callable

import grain
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from ctsearcher_jax.config import Config, to_dict
from ctsearcher_jax.errors import CheckpointError, ConfigError, OutputError
from ctsearcher_jax.metrics.registry import METRICS

# Config keys that must not change when a run is resumed: they define the model, the data
# order, the optimisation trajectory or the meaning of the step counter. Everything else
# (paths, logging, retention, fsdp, eval settings) may change between launches.
RESUME_INVARIANT = {
    "model": None,  # the whole section
    "finetune": None,
    "data": ("frame", "z_extent", "blur_sigma", "train_split", "eval_split",
             "validation_fraction", "validation_seed"),  # the last three decide the carve
    "train": ("seed", "lr", "beta1", "beta2", "eps", "weight_decay", "warmup_epochs", "epochs",
              "batch_size", "duration_loss_weight", "clip_grad_norm", "grad_accum_steps",
              "share_forward_across_readers", "legacy_first_step_lr_zero",
              "legacy_loss_epsilon"),
}


def incompatible_keys(saved: dict[str, Any], config: Config) -> list[str]:
    """Dotted keys whose value differs between a saved resolved config and `config`."""
    current = to_dict(config)
    defaults = to_dict(Config())  # a key added after the checkpoint was written had its default
    out = []
    for section, keys in RESUME_INVARIANT.items():
        old = {**defaults[section], **saved.get(section, {})}
        new = current[section]
        for key in (keys if keys is not None else sorted(set(old) | set(new))):
            if old.get(key) != new.get(key):
                out.append(f"{section}.{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}")
    return out


def check_compatible(meta: dict[str, Any], config: Config, *, num_train_cts: int,
                     checkpoint_dir: Path, evaluation_cts: list[str] | None = None) -> None:
    """ConfigError when resuming `meta`'s run with `config` would not continue the same run.

    evaluation_cts: the CTs evaluated now; checked against the checkpoint's (a carved
    validation split that changed would change the training CTs too).
    """
    problems = incompatible_keys(meta["config"], config)
    if meta.get("num_train_cts") != num_train_cts:
        problems.append(f"training CTs: checkpoint {meta.get('num_train_cts')}, now {num_train_cts}")
    saved = (meta.get("splits") or {}).get("evaluation_cts")
    if saved is not None and evaluation_cts is not None and list(saved) != list(evaluation_cts):
        changed = sorted(set(saved) ^ set(evaluation_cts))
        problems.append(f"evaluation CTs: {len(saved)} in the checkpoint, {len(evaluation_cts)} "
                        f"now ({len(changed)} differ, e.g. {changed[:3]})")
    if problems:
        raise ConfigError(
            f"cannot resume from {checkpoint_dir} (step {meta['step']}): the config or data "
            f"changed: {'; '.join(problems)}. Use the saved settings (see config.yaml in the "
            "workdir) or start a fresh run with another --workdir")


# Selection metrics produced during training that the metrics registry does not list.
TRAINING_METRICS_HIGHER_IS_BETTER = {"eval_loss": False, "eval_spatial": False,
                                     "eval_duration": False}


def metric_higher_is_better(name: str) -> bool:
    """Direction of a selection metric: the metrics registry, or the training losses (lower)."""
    if name in METRICS:
        return METRICS[name].higher_is_better
    if name in TRAINING_METRICS_HIGHER_IS_BETTER:
        return TRAINING_METRICS_HIGHER_IS_BETTER[name]
    raise ConfigError(f"eval.best_metric={name!r} is unknown; choose one of "
                      f"{sorted(METRICS) + sorted(TRAINING_METRICS_HIGHER_IS_BETTER)}")


def _best_value_fn(best_metric: str, higher: bool) -> Callable[[dict[str, Any]], float]:
    """The value Orbax ranks checkpoints by; a NaN or missing value never counts as the best."""
    worst = -math.inf if higher else math.inf

    def best_value(metrics: dict[str, Any]) -> float:
        value = metrics.get(best_metric)
        return worst if value is None or math.isnan(float(value)) else float(value)

    return best_value


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: the train state pytree and its metadata."""

    state: Any
    meta: dict[str, Any]


ITEMS = ("state", "data", "meta")


def is_complete(step_dir: Path) -> bool:
    """A step directory every item of which Orbax committed (commit markers present)."""
    return (step_dir / "_CHECKPOINT_METADATA").is_file() and all(
        (step_dir / item / "commit_success.txt").is_file() for item in ITEMS)


def set_aside_incomplete(directory: Path) -> list[Path]:
    """Rename step directories that look finalised but lack commit markers (a crash on a
    filesystem without atomic rename, or a hand-copied step) to `<step>.incomplete`, so they are
    never loaded and never overwritten. Orbax's own `*.orbax-checkpoint-tmp-*` directories are
    ignored by Orbax and removed when the manager opens. Returns the renamed paths."""
    moved = []
    if not directory.is_dir():
        return moved
    for path in sorted(directory.iterdir()):
        if path.is_dir() and path.name.isdigit() and not is_complete(path):
            target = path.with_name(f"{path.name}.incomplete")
            n = 1
            while target.exists():
                n += 1
                target = path.with_name(f"{path.name}.incomplete{n}")
            path.rename(target)
            moved.append(target)
    return moved


# How storage failures read when a library (TensorStore, for the arrays) reports them as text.
_STORAGE_FAILURES = ("No space left on device", "Disk quota exceeded", "Read-only file system",
                     "Permission denied")


def write_error_in(exc: BaseException | None) -> str | None:
    """What storage failure an exception (or its cause/context chain) reports, or None.

    Orbax re-raises a background write's OSError, possibly wrapped; TensorStore reports its own
    failures as ValueError/RuntimeError text.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            where = f" at {exc.filename}" if exc.filename else ""
            return f"{exc.strerror or exc}{where}"
        text = str(exc)
        hit = next((f for f in _STORAGE_FAILURES if f in text), None)
        if hit is not None:
            return hit
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _QuietWriteErrors(logging.Filter):
    """Drops Orbax's logged tracebacks of a failed write (each failure is logged by three
    threads, about 150 lines); the failure itself is re-raised and reported as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return write_error_in(exc) is None


class RunCheckpoints:
    """The CheckpointManager of one workdir (create on every process; Orbax coordinates them).

    A write that fails (disk full, quota, permissions) raises one-line `OutputError` naming the
    step, the cause and the last committed step, which is intact: Orbax writes each step into a
    temporary directory and renames it only when complete.
    """

    def __init__(self, workdir: str | Path, config: Config, *, best_metric: str | None,
                 enable_async: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.best_metric = best_metric
        self.set_aside: list[Path] = []
        if jax.process_index() == 0:
            self.set_aside = set_aside_incomplete(self.directory)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ctsearcher checkpoints checked")
        train = config.train
        policies = [pp.LatestN(n=train.keep_last)]
        best_fn, best_mode = None, "max"
        if best_metric is not None:
            higher = metric_higher_is_better(best_metric)
            best_fn = _best_value_fn(best_metric, higher)
            best_mode = "max" if higher else "min"
            if train.keep_best > 0:
                # BestN keeps the last n after sorting ascending, so lower-is-better sorts reversed.
                policies.append(pp.BestN(get_metric_fn=best_fn, reverse=not higher,
                                         n=train.keep_best, keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            # best_fn makes Orbax record each step's metrics and answer best_step()
            best_fn=best_fn, best_mode=best_mode,
            enable_async_checkpointing=enable_async,
            cleanup_tmp_directories=True,
            create=True)
        self._ocp = ocp
        self._grain = grain
        self._pending: int | None = None
        self._quiet = _QuietWriteErrors()
        logging.getLogger("absl").addFilter(self._quiet)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    def latest_step(self) -> int | None:
        """Newest finalised step (half-written steps are never returned)."""
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step() if self.best_metric else None

    def read_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def save(self, step: int, state: Any, iterator: Any, meta: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Start an asynchronous save of `step` (returns once the arrays are copied off device)."""
        ocp = self._ocp
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=self._grain.checkpoint.CheckpointSave(iterator),
                                  meta=ocp.args.JsonSave(meta))
        try:
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as exc:  # the previous step's background write may fail here
            self._write_failed(exc, self._pending if self._pending is not None else step)
        self._pending = step

    def restore(self, step: int, abstract_state: Any, iterator: Any) -> Restored:
        """Restore `step` into arrays laid out like `abstract_state` (ShapeDtypeStructs with
        shardings) and set `iterator` to the saved position.

        Resuming on a different number of processes (the saved iterator states are per process)
        is exact too: the pipeline's order is a function of the global step alone, so each
        process's iterator is set to `step` consumed local batches.
        """
        ocp = self._ocp
        own = (self.directory / str(step) / "data" /
               f"process_{jax.process_index()}-of-{jax.process_count()}.json")
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if own.is_file():
            items["data"] = self._grain.checkpoint.CheckpointRestore(iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, FileNotFoundError) as exc:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} cannot be restored "
                                  f"into this model: {exc}") from exc
        if not own.is_file():
            iterator.set_state({"next_index": step})
        return Restored(restored["state"], restored["meta"])

    def restore_state(self, step: int, abstract_state: Any) -> Any:
        """Only the train state of `step` (e.g. the best one, for export)."""
        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def committed_steps(self) -> list[int]:
        """Steps on disk with every item committed (what a resume can use)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir()
                      if p.is_dir() and p.name.isdigit() and is_complete(p))

    def _write_failed(self, exc: BaseException, step: int) -> None:
        """Re-raise a failed write as one-line OutputError (other errors unchanged)."""
        cause = write_error_in(exc)
        if cause is None:
            raise exc
        try:  # stop the background threads of the aborted save quietly
            self.manager.close()
        except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
            pass
        committed = self.committed_steps()
        kept = (f"the last committed checkpoint, step {committed[-1]}, is intact: free space and "
                "run the same command to resume from it" if committed else
                "no checkpoint was committed yet")
        raise OutputError(f"{self.directory / str(step)}: checkpoint not written ({cause}); "
                          f"{kept}") from None

    def wait(self) -> None:
        try:
            self.manager.wait_until_finished()
        except Exception as exc:
            self._write_failed(exc, self._pending if self._pending is not None else -1)

    def close(self) -> None:
        logging.getLogger("absl").removeFilter(self._quiet)
        self.manager.close()
