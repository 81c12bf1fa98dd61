"""The four programs a run compiles, built by the project's own builders over given devices.

Each builder returns a `Program`: the jit-wrapped function the command runs and abstract
arguments (`jax.ShapeDtypeStruct`s with the command's shardings), ready for
`program.jitted.trace(*program.args).lower()` on any platform. Nothing is allocated.

    train     `train.finetune.make_step` (= `train.step.make_train_step`) over
              `train.sharding.make_mesh(train, devices)`: state from `train.step.init_train_state`
              (shape only) placed by `state_shardings` (`train.fsdp` honoured), the batch split
              over every chip, gradient accumulation and the compute dtype from the config
    finetune  the same with `finetune.source` set: `make_finetune_step` (sampler + in-step
              ScanMatch reward, whose kernel follows the step's platform)
    predict   the architecture's sampler (`model.generate.samplers(config).per_ct`: CT-Searcher's
              `model.sampling.sample_scanpaths_per_ct`, or the AR scan) as `predict` shards it
              (`model/generate.py`): one host's chips on a "data" axis, the model replicated,
              a chunk of CTs split over the chips, `samples x readers` draws per CT
    extract   `feature_extraction.sliding_window.jit_encoder` of the Swin UNETR encoder as
              `extract` builds it (`feature_extraction/extract.py: build_extractor`): one
              host's chips, `extract.batch` windows of roi^3 per chip, parameters replicated

predict and extract run per host (each process takes every N-th CT over its local devices), so
they compile for the devices of process 0; train and finetune compile for every chip.
Batches are per chip (`per_chip`); the global batch is per_chip x the program's devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ctsearcher_jax.config import Config
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.model.factory import build as build_model
from ctsearcher_jax.model.generate import CHUNK, samplers
from ctsearcher_jax.planning.inputs import batch_structs, with_shardings
from ctsearcher_jax.train import finetune, sharding, step
from ctsearcher_jax.train.optimizer import lr_schedule, make_optimizer
from feature_extraction import swin_unetr
from feature_extraction.sliding_window import jit_encoder

PROGRAMS = ("train", "finetune", "predict", "extract")
# Steps per epoch given to the optimizer's schedule: it only sets constants in the program.
STEPS_PER_EPOCH = 100
# Placeholder `finetune.source`: the fine-tuning step reads no weights (the loop loads them).
PLANNED_SOURCE = "<planned>"


@dataclasses.dataclass(frozen=True)
class Program:
    """One compilable program and what it processes per call.

    jitted: `jax.jit`-wrapped function; args: its abstract arguments (with shardings).
    global_batch: items per call (CTs or windows) over `chips` devices; unit: "CTs" or "windows".
    mesh: axis name -> size. note: what else decides the program (dtype, readers, samples).
    """

    name: str
    jitted: Any
    args: tuple
    global_batch: int
    chips: int
    unit: str
    mesh: dict[str, int]
    note: str

    @property
    def per_chip(self) -> int:
        return self.global_batch // self.chips


def host_devices(devices: list) -> list:
    """The devices of process 0 (one host), where predict and extract compile."""
    first = min(d.process_index for d in devices)
    return [d for d in devices if d.process_index == first]


def default_per_chip(name: str, config: Config, chips: int, host_chips: int) -> int:
    """The per-chip batch the command would use: train/finetune `train.batch_size` rounded up to
    a multiple of (chips x grad_accum_steps); predict its chunk of CHUNK CTs rounded up to the
    host's chips; extract `extract.batch` windows."""
    if name in ("train", "finetune"):
        step_multiple = config.train.grad_accum_steps
        per_chip = -(-config.train.batch_size // (chips * step_multiple)) * step_multiple
        return max(per_chip, step_multiple)
    if name == "predict":
        return -(-CHUNK // host_chips)
    return config.extract.batch


def build(name: str, config: Config, devices: list, per_chip: int, *, readers: int = 2,
          samples: int = 1, platform: str | None = None) -> Program:
    """The program `name` (one of PROGRAMS) with `per_chip` items per chip over `devices`.

    readers: reader slots per CT (the dataset's largest reader count; CT-ScanGaze has 2).
    samples: predict's `--samples` (draws per reader). platform: passed to the fine-tuning step
    (which picks the reward's kernel from it); None = the devices' platform.
    """
    builders: dict[str, Callable[..., Program]] = {
        "train": _train, "finetune": _finetune, "predict": _predict, "extract": _extract}
    if name not in builders:
        raise ConfigError(f"unknown program {name!r}; choose from {', '.join(PROGRAMS)}")
    if per_chip < 1:
        raise ConfigError(f"{name}: the batch per chip must be >= 1, got {per_chip}")
    return builders[name](config, devices, per_chip, readers=readers, samples=samples,
                          platform=platform)


def _train_state(config: Config, mesh: Mesh):
    """(graphdef, abstract state with shardings, abstract rng state, state shardings, tx)."""
    tx = make_optimizer(config.train, STEPS_PER_EPOCH)
    graphdef, _, abstract = step.init_train_state(config, tx)
    shardings = sharding.state_shardings(mesh, abstract)
    # The step's rng streams: only their structure matters (reseeded every step), replicated.
    abstract_rng = jax.eval_shape(lambda: step.split(*step.build(config, tx))[1])
    rng_state = with_shardings(abstract_rng, sharding.replicated(mesh))
    return graphdef, with_shardings(abstract, shardings), rng_state, shardings


def _step_program(name: str, config: Config, devices: list, per_chip: int, *, readers: int,
                  platform: str | None) -> Program:
    """train / finetune: the loop's step over a (data, fsdp) mesh of every device."""
    mesh = sharding.make_mesh(config.train, devices)
    batch = per_chip * len(devices)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=batch))
    hosts = len({d.process_index for d in devices})
    sharding.check_batch_divides(config.train, mesh, hosts)
    graphdef, state, rng_state, shardings = _train_state(config, mesh)
    schedule = lr_schedule(config.train, STEPS_PER_EPOCH)
    jitted = finetune.make_step(graphdef, config, schedule, shardings, sharding.replicated(mesh),
                                platform=platform)
    args = (state, rng_state, batch_structs(config, batch, readers, sharding.batch_sharding(mesh)))
    note = (f"{config.model.compute_dtype}, {readers} readers/CT, accumulation "
            f"{config.train.grad_accum_steps}, fsdp {config.train.fsdp}")
    if name == "finetune":
        note += f", {config.finetune.samples} samples/reader"
    return Program(name, jitted, args, batch, len(devices), "CTs", dict(mesh.shape), note)


def _train(config: Config, devices: list, per_chip: int, *, readers: int, samples: int,
           platform: str | None) -> Program:
    if config.finetune.source:  # a fine-tuning config plans as `finetune`
        config = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune,
                                                                          source=""))
    return _step_program("train", config, devices, per_chip, readers=readers, platform=platform)


def _finetune(config: Config, devices: list, per_chip: int, *, readers: int, samples: int,
              platform: str | None) -> Program:
    ft = dataclasses.replace(config.finetune, source=config.finetune.source or PLANNED_SOURCE)
    config = dataclasses.replace(config, finetune=ft)
    return _step_program("finetune", config, devices, per_chip, readers=readers,
                         platform=platform)


def _predict(config: Config, devices: list, per_chip: int, *, readers: int, samples: int,
             platform: str | None) -> Program:
    """`sample_records`' call: tokens (chunk, N, C), one key and Z extent per CT, sharded."""
    devices = host_devices(devices)
    mesh = Mesh(np.array(devices), ("data",))
    rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    model = nnx.eval_shape(lambda: build_model(config.model, nnx.Rngs(params=0, dropout=0)))
    graphdef, abstract = nnx.split(model)
    chunk = per_chip * len(devices)
    width = samples * readers  # with ground truth: `samples` draws per reader of each CT
    m, ev = config.model, config.eval
    per_ct = samplers(config).per_ct

    def sample(state, tokens, keys, z_extent):
        return per_ct(nnx.merge(graphdef, state), tokens, keys, num_samples=width,
                      min_length=ev.min_length,
                      legacy_duration_sampling=ev.legacy_duration_sampling,
                      frame=config.data.frame, z_extent=z_extent)

    key_dtype = jax.eval_shape(lambda: jax.random.key(0)).dtype
    args = (with_shardings(abstract, replicated),
            jax.ShapeDtypeStruct((chunk, m.num_tokens, m.feature_dim), np.float32, sharding=rows),
            jax.ShapeDtypeStruct((chunk,), key_dtype, sharding=rows),
            jax.ShapeDtypeStruct((chunk,), np.float32, sharding=rows))
    note = f"{m.compute_dtype}, {width} scanpaths/CT ({samples} per reader x {readers} readers)"
    return Program("predict", jax.jit(sample), args, chunk, len(devices), "CTs",
                   dict(mesh.shape), note)


def swin_config(config: Config) -> swin_unetr.SwinUNETRConfig:
    """The encoder `extract --weights random` builds (a weights file carries the same defaults
    with its own feature_size and merging order)."""
    ex = config.extract
    return swin_unetr.SwinUNETRConfig(feature_size=ex.feature_size, merging_order=ex.merging_order,
                                      dtype=ex.dtype)


def _extract(config: Config, devices: list, per_chip: int, *, readers: int, samples: int,
             platform: str | None) -> Program:
    """The window encoder: (batch, roi, roi, roi, 1) float32 windows -> dec4, hidden4."""
    devices = host_devices(devices)
    mesh = Mesh(np.array(devices), ("data",))
    cfg = swin_config(config)
    model = nnx.eval_shape(lambda: swin_unetr.SwinUNETR(cfg, rngs=nnx.Rngs(0), parts="encoder"))
    graphdef, params = nnx.split(model)

    def apply(params, windows):  # as `build_extractor` wraps `encode_fn`
        hidden, dec4 = swin_unetr.encode_fn(graphdef, params, windows)
        return dec4, hidden[4]

    roi, batch = config.extract.roi, per_chip * len(devices)
    args = (with_shardings(params, NamedSharding(mesh, P())),
            jax.ShapeDtypeStruct((batch, roi, roi, roi, 1), np.float32,
                                 sharding=NamedSharding(mesh, P("data"))))
    note = f"{cfg.dtype}, feature_size {cfg.feature_size}, {roi}^3 windows"
    return Program("extract", jit_encoder(apply, mesh), args, batch, len(devices), "windows",
                   dict(mesh.shape), note)
