"""The training loop: wires mesh -> input -> state -> steps -> evaluators -> checkpoints -> logs.

`train_and_evaluate(config, workdir)` runs (or resumes) one run in `workdir`:

    workdir/config.yaml       resolved config (rewritten at every launch)
    workdir/checkpoints/      Orbax steps (train state, grain iterator, metadata)
    workdir/tb/               TensorBoard (tensorboardX) events
    workdir/metrics.jsonl     the same scalars as JSON lines
    workdir/figures/          sampled vs ground-truth drilling plot at each evaluation
    workdir/eval_metrics.json the latest evaluation (step, metrics)
    workdir/model/            the best (else final) model, `save_model` format, at completion,
                              with export.json (step, selecting metric and its value)

If `workdir/checkpoints` holds a finalised step, the run continues from it exactly (same data
order, dropout masks and optimizer state as an uninterrupted run); a config that would change
the run raises ConfigError. SIGTERM (preemption) finishes the current step, saves a checkpoint
and returns with status "preempted". Every process calls this function; only process 0 logs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from ctsearcher_jax.config import Config, to_dict, write_resolved
from ctsearcher_jax.data.inputs import describe_inputs, write_inputs
from ctsearcher_jax.data.pipeline import (
    CTExampleSource,
    eval_dataset,
    make_iterator,
    max_readers,
    train_dataset,
)
from ctsearcher_jax.data.readers import with_readers
from ctsearcher_jax.data.schema import load_dataset
from ctsearcher_jax.data.splits import RunSplits, describe_selection, split_items
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.io import atomic_write_json
from ctsearcher_jax.logs import progress_bars
from ctsearcher_jax.model.factory import check_architecture, check_sampling
from ctsearcher_jax.train import checkpoint as ckpt_lib
from ctsearcher_jax.train import finetune as finetune_lib
from ctsearcher_jax.train import sharding as sh
from ctsearcher_jax.train import step as step_lib
from ctsearcher_jax.train.evaluators import LossEvaluator, ScanpathMetricsEvaluator, scalar
from ctsearcher_jax.train.export import export_selected
from ctsearcher_jax.train.optimizer import lr_schedule, make_optimizer
from ctsearcher_jax.train.tracker import make_tracker

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ctsearcher_jax.train.evaluators import Evaluator


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """When the loop logs, evaluates and checkpoints, as named decisions on the step count.

    `step` is the number of optimizer steps done (1 after the first step); epochs end every
    `steps_per_epoch` steps and the run ends at `total_steps` (a whole number of epochs).
    """

    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every_epochs: int
    checkpoint_every_steps: int  # 0 = no periodic checkpoints
    has_evaluators: bool

    @classmethod
    def of(cls, train, steps_per_epoch: int, *, has_evaluators: bool) -> RunPlan:
        """The plan of `train` (a TrainConfig) with `steps_per_epoch` steps per epoch."""
        return cls(steps_per_epoch, steps_per_epoch * train.epochs, train.log_every,
                   train.eval_every_epochs, train.checkpoint_every_steps, has_evaluators)

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def is_last_step(self, step: int) -> bool:
        return step == self.total_steps

    def is_epoch_end(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0

    def is_eval_epoch_end(self, step: int) -> bool:
        """The end of every `eval_every_epochs`-th epoch."""
        return self.is_epoch_end(step) and self.epoch(step) % self.eval_every_epochs == 0

    def should_log(self, step: int) -> bool:
        return step % self.log_every == 0 or self.is_last_step(step)

    def should_evaluate(self, step: int) -> bool:
        """At every eval epoch end and at the end of the run (when there is something to run)."""
        return self.has_evaluators and self.is_epoch_end(step) and (
            self.is_eval_epoch_end(step) or self.is_last_step(step))

    def should_checkpoint(self, step: int, *, preempted: bool = False) -> bool:
        """At every eval epoch end (evaluated or not), every `checkpoint_every_steps` steps, at
        the end of the run, and on preemption."""
        periodic = self.checkpoint_every_steps > 0 and step % self.checkpoint_every_steps == 0
        return preempted or periodic or self.is_last_step(step) or self.is_eval_epoch_end(step)


@dataclasses.dataclass
class RunResult:
    """Outcome of `train_and_evaluate`."""

    status: str  # "completed" or "preempted"
    step: int  # optimizer steps done
    total_steps: int
    last_train: dict[str, float]
    last_eval: dict[str, float]
    best_step: int | None


class _StopFlag:
    """Set by SIGTERM; checked after every step.

    With several processes the flag must be agreed on (a collective, which also waits for the
    step): that happens only at steps that log, evaluate or checkpoint anyway, so the loop never
    syncs with the device on the other steps. A SIGTERM is then acted on within `log_every`
    steps (SLURM's --signal=TERM@300 leaves five minutes).
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self, sync: bool = True) -> bool:
        """True on every process as soon as any process received SIGTERM.

        sync: with several processes, agree now (every process must pass the same value at the
        same step); False = not at this step (returns False).
        """
        if jax.process_count() == 1:
            return self.requested
        if not sync:
            return False

        flags = multihost_utils.process_allgather(np.array([int(self.requested)], np.int32))
        return bool(np.asarray(flags).any())


def _split_items(config: Config) -> tuple[list, RunSplits]:
    """Every CT of the dataset and the run's splits (data/splits.py: the validation carve)."""
    items = load_dataset(config.data.data_dir, frame=config.data.frame)
    return items, split_items(items, config.data)


def _flat_hparams(config: Config) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in to_dict(config).items()
            for k, v in values.items()}


@dataclasses.dataclass
class TrainRun:
    """A run ready for its first (or next) step: what `setup_run` builds and `run_steps` drives.

    `state` is the sharded train state (restored when resuming); `iterator` the grain iterator,
    positioned at `start_step`; `say` reports on process 0 only.
    """

    config: Config
    workdir: Path
    mesh: Any
    plan: RunPlan
    num_train_cts: int
    iterator: Any
    checkpoints: Any  # ckpt_lib.RunCheckpoints
    tracker: Any
    graphdef: Any
    rng_state: Any
    state: Any
    abstract: Any  # the state's ShapeDtypeStructs
    shardings: Any
    evaluators: list[Evaluator]
    train_step: Callable[..., Any]
    start_step: int
    best_metric: str | None
    say: Callable[[str], None]
    splits: dict[str, Any]  # RunSplits.record(): the eval split, its CTs, the split sizes

    def meta_for(self, step: int) -> dict[str, Any]:
        """The checkpoint metadata of `step` (checked when the run is resumed)."""
        return {"step": step, "epoch": self.plan.epoch(step), "num_train_cts": self.num_train_cts,
                "steps_per_epoch": self.plan.steps_per_epoch, "config": to_dict(self.config),
                "splits": self.splits}

    def close(self) -> None:
        self.checkpoints.wait()
        self.tracker.close()


@dataclasses.dataclass
class StepsDone:
    """What `run_steps` leaves: how the loop ended and the last logged values."""

    status: str  # "completed" or "preempted"
    step: int
    last_train: dict[str, float]
    last_eval: dict[str, float]


def train_and_evaluate(config: Config, workdir: str | Path, *,
                       extra_evaluators: Callable[..., Sequence[Evaluator]] | None = None,
                       echo: Callable[[str], None] | None = None,
                       progress: bool = True) -> RunResult:
    """Train (or resume) the run in `workdir`; see the module docstring.

    Process 0 reports through logging (`ctsearcher_jax.train.loop`), or through `echo` when given:
    a start-up line (devices, processes, batch, steps, resume point), evaluations, the export.
    progress: a tqdm bar when stderr is a terminal; otherwise (a log file, `progress=False`) a
    line every `train.log_every` steps with step/total, loss, CTs/s and ETA.

    extra_evaluators: optional factory `(config, graphdef, rng_state, mesh, eval_items) ->
    [Evaluator, ...]` of further evaluators (see `train/evaluators.py`).
    """
    run = setup_run(config, workdir, extra_evaluators=extra_evaluators, echo=echo)
    try:
        done = run_steps(run, progress=progress)
    finally:
        run.close()
    best = run.checkpoints.best_step()
    if done.status == "completed":
        exported = export_selected(run.config, run.workdir, run.checkpoints, run.state,
                                   step=done.step, total_steps=run.plan.total_steps,
                                   best_metric=run.best_metric,
                                   restore_target=target_of(run.abstract, run.shardings))
        run.say(f"exported the model of step {exported} to {run.workdir / 'model'}")
    run.checkpoints.close()
    return RunResult(done.status, done.step, run.plan.total_steps, done.last_train,
                     done.last_eval, best)


def setup_run(config: Config, workdir: str | Path, *,
              extra_evaluators: Callable[..., Sequence[Evaluator]] | None = None,
              echo: Callable[[str], None] | None = None) -> TrainRun:
    """Mesh -> input -> checkpoints -> state -> evaluators -> step: a `TrainRun` at its start
    step (restored from `workdir/checkpoints` when the run exists; ConfigError when its config
    would change the run)."""
    check_architecture(config.model)
    check_sampling(config.model.arch, config.eval.temperature, config.eval.top_k)
    workdir = Path(workdir)
    process_index, process_count = jax.process_index(), jax.process_count()
    say = (lambda _msg: None) if process_index != 0 else (echo or _log.info)
    mesh = sh.make_mesh(config.train)
    sh.check_batch_divides(config.train, mesh, process_count)

    items, splits = _split_items(config)
    train_items, eval_items = splits.train, splits.evaluation
    config = with_readers(config, items)  # a conditioned model's reader ids, from the data
    train_cfg = config.train
    r_max = max_readers(items)
    steps_per_epoch = len(train_items) // train_cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={train_cfg.batch_size} exceeds the "
                          f"{len(train_items)} training CTs; lower it")
    plan = RunPlan.of(train_cfg, steps_per_epoch, has_evaluators=bool(eval_items))
    dataset = train_dataset(CTExampleSource(train_items, config, r_max),
                            batch_size=train_cfg.batch_size, seed=train_cfg.seed,
                            num_steps=plan.total_steps, process_index=process_index,
                            process_count=process_count)
    iterator = make_iterator(dataset)

    # an existing run must be continued with a compatible config
    best_metric = config.eval.best_metric if eval_items else None
    checkpoints = ckpt_lib.RunCheckpoints(workdir, config, best_metric=best_metric)
    for path in checkpoints.set_aside:
        say(f"ignored incomplete checkpoint, moved to {path}")
    start_step = checkpoints.latest_step() or 0
    if start_step:
        ckpt_lib.check_compatible(checkpoints.read_meta(start_step), config,
                                  num_train_cts=len(train_items),
                                  checkpoint_dir=checkpoints.directory,
                                  evaluation_cts=[it.name for it in eval_items])
    tracker = make_tracker(workdir, process_index=process_index, start_step=start_step,
                           trackers=train_cfg.tracker, wandb_project=train_cfg.wandb_project)

    # state: shape first, then materialised sharded
    tx = make_optimizer(train_cfg, steps_per_epoch)
    graphdef, _, abstract = step_lib.init_train_state(config, tx)
    shardings = sh.state_shardings(mesh, abstract)
    graphdef, rng_state, state = step_lib.init_train_state(config, tx, mesh=mesh,
                                                           shardings=shardings)
    evaluators = _make_evaluators(config, eval_items, r_max, graphdef, rng_state, mesh, tracker,
                                  workdir, extra_evaluators)
    available = [n for e in evaluators for n in e.metric_names]
    if best_metric is not None and best_metric not in available:
        raise ConfigError(f"eval.best_metric={best_metric!r} is not computed during training; "
                          f"choose one of {available}")

    if start_step:  # resume: restore the newest finalised checkpoint of the workdir
        del state  # free the fresh arrays before restoring
        tree = checkpoints.restore(start_step, target_of(abstract, shardings).checkpoint_tree(),
                                   iterator).state
        state = step_lib.TrainState.from_checkpoint_tree(tree)
        say(f"resumed from {checkpoints.directory / str(start_step)} "
            f"(step {start_step}/{plan.total_steps})")
    if process_index == 0:
        write_resolved(config, workdir)
        write_inputs(workdir, describe_inputs(config.data.data_dir, config.data.feature_dir,
                                              items, splits))
    say(f"data: {len(train_items)} training CTs; checkpoints chosen on "
        f"{describe_selection(splits.record())}" + (
            "; this is the test split, as the original does: scores on it are optimistic"
            if splits.selects_on_test else ""))
    say(f"training: {jax.device_count()} devices ({jax.default_backend()}, mesh "
        f"{dict(mesh.shape)}), {process_count} process(es); batch {train_cfg.batch_size} CTs "
        f"x up to {r_max} readers; {plan.total_steps} steps ({train_cfg.epochs} epochs x "
        f"{steps_per_epoch}); " + (f"resuming at step {start_step}" if start_step
                                   else "starting at step 0"))
    if config.finetune.source and not start_step:  # fine-tuning starts from the source model
        state = finetune_lib.start_from_source(config, state, shardings)
    train_step = finetune_lib.make_step(graphdef, config, lr_schedule(train_cfg, steps_per_epoch),
                                        shardings, sh.replicated(mesh))
    if start_step == 0:
        tracker.log_hparams(_flat_hparams(config), metrics=available)
    return TrainRun(config, workdir, mesh, plan, len(train_items), iterator, checkpoints, tracker,
                    graphdef, rng_state, state, abstract, shardings, evaluators, train_step,
                    start_step, best_metric, say, splits.record())


def _make_evaluators(config: Config, eval_items, r_max: int, graphdef, rng_state, mesh, tracker,
                     workdir: Path, extra_evaluators) -> list[Evaluator]:
    """The loss on the eval split, the scanpath metrics (`train.eval_scanpath_metrics`) and any
    extra evaluators; none without eval CTs."""
    if not eval_items:
        return []
    process_index, process_count = jax.process_index(), jax.process_count()
    evaluators: list[Evaluator] = [LossEvaluator(
        eval_step=step_lib.make_eval_step(graphdef, config.train),
        dataset=eval_dataset(CTExampleSource(eval_items, config, r_max),
                             batch_size=config.train.batch_size, process_index=process_index,
                             process_count=process_count),
        mesh=mesh, rng_state=rng_state, duration_weight=config.train.duration_loss_weight)]
    if config.train.eval_scanpath_metrics:
        evaluators.append(ScanpathMetricsEvaluator(config, eval_items, tracker=tracker,
                                                   figure_dir=workdir / "figures"))
    if extra_evaluators is not None:
        evaluators.extend(extra_evaluators(config, graphdef, rng_state, mesh, eval_items))
    return evaluators


def run_steps(run: TrainRun, *, progress: bool = True) -> StepsDone:
    """Step from `run.start_step` to the end of the plan (or a SIGTERM): log, evaluate and
    checkpoint when the plan says; `run.state` is the state after the last step."""
    plan, train_cfg = run.plan, run.config.train
    stop = _StopFlag()
    stop.install()
    done = StepsDone("completed", run.start_step, {}, {})
    show_bar = progress_bars(progress) and jax.process_index() == 0
    bar = tqdm(total=plan.total_steps, initial=run.start_step, unit="step", dynamic_ncols=True,
               disable=not show_bar)
    window = _Throughput(run.start_step)
    try:
        while done.step < plan.total_steps:
            local = next(run.iterator)
            run.state, metrics = run.train_step(run.state, run.rng_state,
                                                sh.global_batch(run.mesh, local))
            done.step += 1
            step = done.step
            window.steps += 1
            bar.update(1)
            if plan.should_log(step):
                done.last_train = window.metrics(metrics, step, plan, train_cfg.batch_size)
                run.tracker.log_scalars(step, done.last_train)
                bar.set_postfix(loss=f"{done.last_train['loss']:.4f}")
                if not show_bar:
                    run.say(step_line(step, plan.total_steps, done.last_train, window.eta(step, plan)))
            evaluate = plan.should_evaluate(step)
            eval_metrics = _evaluate(run, step) if evaluate else None
            if eval_metrics is not None:
                done.last_eval = eval_metrics
            # No host-device sync on the other steps: while step s runs (async dispatch), the
            # next loop turn reads batch s+1 and puts it on the devices, so the next step is
            # ready when this one ends. The iterator is never read ahead of the step, so the
            # checkpointed iterator state stays exact.
            sync_point = plan.should_log(step) or evaluate or plan.should_checkpoint(step)
            preempted = stop.agreed(sync=sync_point)
            if plan.should_checkpoint(step, preempted=preempted):
                run.checkpoints.save(step, run.state.checkpoint_tree(), run.iterator,
                                     run.meta_for(step), metrics=eval_metrics)
            if sync_point:
                run.tracker.flush()
            if evaluate or step % train_cfg.log_every == 0:
                window.restart()  # throughput counts training only, not evaluation or saving
            if preempted:
                done.status = "preempted"
                run.say(f"SIGTERM: saved step {step}, stopping")
                break
    finally:
        bar.close()
        stop.restore()
    return done


def _evaluate(run: TrainRun, step: int) -> dict[str, float]:
    """Run every evaluator after `step`; log the values (tracker, eval_metrics.json, a line)."""
    eval_metrics = run_evaluators(run.evaluators, run.state, step)
    run.tracker.log_scalars(step, eval_metrics, prefix="eval")
    if jax.process_index() == 0:
        write_eval_metrics(run.workdir, step, run.plan.epoch(step), eval_metrics)
    run.say(f"step {step} epoch {run.plan.epoch(step)}: " + " ".join(
        f"{k}={v:.4f}" for k, v in eval_metrics.items()))
    return eval_metrics


class _Throughput:
    """CTs per second over the training steps since the last restart, and the run's ETA (steps
    per second over the whole run so far, evaluations included)."""

    def __init__(self, start_step: int):
        self.start, self.steps = time.perf_counter(), 0
        self.run_start, self.run_start_step = time.perf_counter(), start_step

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def metrics(self, metrics: dict[str, Any], step: int, plan: RunPlan,
                batch_size: int) -> dict[str, float]:
        """The step's metrics as floats (waits for the step) plus CTs/s and the epoch."""
        out = {k: scalar(v) for k, v in metrics.items()}
        out["cts_per_s"] = self.steps * batch_size / max(time.perf_counter() - self.start, 1e-9)
        out["epoch"] = step / plan.steps_per_epoch
        return out

    def eta(self, step: int, plan: RunPlan) -> float:
        rate = (step - self.run_start_step) / max(time.perf_counter() - self.run_start, 1e-9)
        return (plan.total_steps - step) / rate


def run_evaluators(evaluators: Sequence[Evaluator], state, step: int) -> dict[str, float]:
    """Every evaluator's (name, value) pairs for `state` after `step`, in order."""
    out: dict[str, float] = {}
    for evaluator in evaluators:
        out.update(dict(evaluator.run(state, step)))
    return out


def write_eval_metrics(workdir: Path, step: int, epoch: int, metrics: dict[str, float]) -> None:
    """`eval_metrics.json`: the latest evaluation, for `ctsearcher report` (NaN is not JSON: null)."""
    atomic_write_json(workdir / "eval_metrics.json", {
        "step": step, "epoch": epoch,
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}})


def step_line(step: int, total: int, metrics: dict[str, float], eta_seconds: float) -> str:
    """`step 40/300 (epoch 2.00) loss 3.1416 spatial 2.9 duration 0.24 lr 1.0e-04 12.3 CTs/s
    ETA 0:01:23`: the plain progress line of a log file."""
    eta = int(round(eta_seconds)) if math.isfinite(eta_seconds) else 0
    parts = [f"step {step}/{total}", f"(epoch {metrics.get('epoch', 0.0):.2f})",
             f"loss {metrics.get('loss', float('nan')):.4f}"]
    for key in ("spatial", "duration"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.4f}")
    if "lr" in metrics:
        parts.append(f"lr {metrics['lr']:.2e}")
    parts.append(f"{metrics.get('cts_per_s', 0.0):.2f} CTs/s")
    parts.append(f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
    return " ".join(parts)


def target_of(abstract, shardings):
    """Restore target: ShapeDtypeStructs carrying the shardings to restore into."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)
