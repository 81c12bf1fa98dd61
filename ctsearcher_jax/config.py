"""Typed, frozen experiment configuration.

A run is described by one `Config` made of five sections (model, data, train, eval, extract). Each
section is a frozen dataclass with a one-line comment per field and checks in `__post_init__`.
Configs come from YAML files in `configs/` plus dotted command-line overrides
(`--set train.lr=3e-4`); unknown keys and wrong types raise `ConfigError` naming the key. The
resolved config is written into every run directory (`write_resolved`).

The defaults are `configs/paper.yaml`, the original CT-Searcher recipe, except one:
`data.eval_split` defaults to `validation` (checkpoints chosen on a validation split), where
paper.yaml keeps the original's `test` for parity.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.io import atomic_write_text
from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILIES  # a table, imports nothing
from ctsearcher_jax.typed_data import build_dataclass

GAZE_FRAME = 512  # pixels per side of a CT slice in gaze coordinates (and the legacy Z extent)
# Every integer of a config lies within +-2^53 and every number is finite (`typed_data`); fields
# check their own, tighter ranges below. Seeds are unsigned 32-bit (numpy, JAX).
MAX_SEED = 2**32 - 1
# HU values a CT can hold are about [-1024, 3071]; a window beyond +-1e5 HU is a typing error.
MAX_ABS_HU = 1e5


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """CT-Searcher architecture (shapes: tokens = prod(grid), classes = 1 + tokens)."""

    # Architecture built by `model.build` (a name in `model/factory.py`'s ARCHITECTURES; the
    # factory checks it, so this module imports no model code).
    arch: str = "ct_searcher"
    # Width of every transformer layer (the original's --hidden_dim).
    d_model: int = 768
    # Attention heads per layer (--nhead); must divide d_model.
    num_heads: int = 8
    # Transformer encoder layers.
    num_encoder_layers: int = 6
    # Transformer decoder layers (--num_decoder).
    num_decoder_layers: int = 6
    # Hidden width of each feed-forward block (the original passes hidden_dim).
    dim_feedforward: int = 768
    # Dropout after attention, in and after the feed-forward, on attention weights (--decoder_dropout).
    dropout: float = 0.2
    # Channels of the Swin UNETR feature grid (--img_hidden_dim).
    feature_dim: int = 768
    # Model token grid (Gy, Gx, Gz); features are resized to it with legacy nearest.
    grid: tuple[int, int, int] = (8, 8, 8)
    # Decoder queries = longest predicted scanpath in fixations (--max_length).
    max_length: int = 400
    # Positional table: "sine" (true 3D sine table) or "legacy_random" (the original's xavier overwrite).
    pe: Literal["sine", "legacy_random"] = "sine"
    # Put the stop token last in the key sequence, as the original does (only to import its weights).
    legacy_stop_last: bool = False
    # Dtype of activations and matmuls; parameters stay float32.
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    # Reader input: "none" (one output serves every reader, the original) or "embedding" (a
    # learned vector per reader id added to every decoder query; see model/ct_searcher.py).
    reader_conditioning: Literal["none", "embedding"] = "none"
    # Reader ids of an "embedding" model (the data's `subject` as text); row i of the embedding
    # is readers[i]. Empty: training fills it from the dataset (every split, sorted).
    readers: tuple[str, ...] = ()
    # Autoregressive architectures only: how many of the last decoder layers read the previous
    # fixations (run once per sampled step; the layers before them run once per CT).
    ar_layers: int = 1
    # Autoregressive architectures only: logit-normal mixture components of the within-cell offset.
    offset_components: int = 4
    # Autoregressive architectures only: probability that training hides a (CT, reader)'s reader
    # embedding (the decoder then sees no reader), regularising reader_conditioning: embedding.
    reader_dropout: float = 0.0

    def __post_init__(self) -> None:
        # Upper bounds far above any CT-Searcher (the paper: 768 wide, 6 + 6 layers, 400
        # fixations) that stop a typing error from allocating the machine away.
        for key, most in (("d_model", 16384), ("num_heads", 256), ("num_encoder_layers", 128),
                          ("num_decoder_layers", 128), ("dim_feedforward", 65536),
                          ("feature_dim", 16384), ("max_length", 10000)):
            _check(1 <= getattr(self, key) <= most, f"model.{key}", f"must be in [1, {most}]")
        # Autoregressive architectures only (the factory refuses them set on another one).
        _check(1 <= self.ar_layers <= self.num_decoder_layers, "model.ar_layers",
               f"must be in [1, model.num_decoder_layers ({self.num_decoder_layers})]")
        _check(1 <= self.offset_components <= 64, "model.offset_components", "must be in [1, 64]")
        _check(0.0 <= self.reader_dropout < 1.0, "model.reader_dropout", "must be in [0, 1)")
        _check(self.d_model % self.num_heads == 0, "model.num_heads",
               f"must divide model.d_model ({self.d_model})")
        _check(self.d_model % 2 == 0, "model.d_model", "must be even (duration head uses d/2)")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(len(self.grid) == 3 and all(1 <= g <= 128 for g in self.grid), "model.grid",
               "must be three integers in [1, 128] (Gy, Gx, Gz)")
        _check(self.num_tokens <= 65536, "model.grid",
               f"has {self.num_tokens} cells; at most 65536 (the paper's grid is 8 x 8 x 8)")
        _check(len(set(self.readers)) == len(self.readers), "model.readers", "ids must be unique")
        _check(self.reader_conditioning == "embedding" or not self.readers, "model.readers",
               "only for model.reader_conditioning=embedding")

    @property
    def reader_conditioned(self) -> bool:
        """True when the model takes reader indices (`reader_conditioning: embedding`)."""
        return self.reader_conditioning == "embedding"

    @property
    def num_tokens(self) -> int:
        """Number of grid cells = Gy * Gx * Gz."""
        gy, gx, gz = self.grid
        return gy * gx * gz

    @property
    def num_classes(self) -> int:
        """Spatial classes: STOP (class 0) + one per grid cell."""
        return 1 + self.num_tokens


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the dataset and features are and how gaze becomes targets."""

    # Dataset folder holding data_simplified_split_matched_pt.json and cts/ (--img_dir/--fix_dir).
    data_dir: str = "data"
    # Folder of extracted features <name>.npy + manifest.json (--feat_dir).
    feature_dir: str = "features"
    # In-plane extent of the gaze frame in pixels (X and Y are 1..frame).
    frame: int = GAZE_FRAME
    # Z extent used to bin slices: 512 (the original, fixed) or "volume" (the CT's real slice count).
    z_extent: Union[int, Literal["volume"]] = GAZE_FRAME
    # Gaussian blur of the spatial targets in grid cells; null = one-hot (--blur_sigma).
    blur_sigma: Union[float, None] = None
    # Split used for training.
    train_split: str = "train"
    # Split evaluated during training, which chooses the exported checkpoint: "validation" (the
    # dataset's own, else carved from the training split; data/splits.py), a dataset split
    # ("test": the original's choice, selection on the test split), or "none".
    eval_split: str = "validation"
    # Fraction of the training CTs carved out as the validation split (by CT; at least 1).
    validation_fraction: float = 0.1
    # Seed of the carve (which CTs), independent of train.seed.
    validation_seed: int = 0

    def __post_init__(self) -> None:
        _check(self.frame >= 1, "data.frame", "must be >= 1")
        _check(self.z_extent == "volume" or (isinstance(self.z_extent, int) and self.z_extent >= 1),
               "data.z_extent", "must be a positive integer or 'volume'")
        _check(self.blur_sigma is None or self.blur_sigma > 0, "data.blur_sigma",
               "must be > 0 or null")
        _check(0.0 <= self.validation_fraction < 1.0, "data.validation_fraction",
               "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run control."""

    # Seed of parameters, dropout and data order; used as given (the original overrode it at random).
    seed: int = 0
    # Peak learning rate of AdamW (--lr).
    lr: float = 1e-4
    # AdamW beta1.
    beta1: float = 0.9
    # AdamW beta2.
    beta2: float = 0.98
    # AdamW epsilon (torch semantics: added to sqrt of the bias-corrected second moment).
    eps: float = 1e-9
    # Decoupled weight decay, multiplied by the learning rate as in torch.optim.AdamW (--weight_decay).
    weight_decay: float = 5e-5
    # Epochs of linear warm-up, computed from the real number of steps per epoch (--warmup_epoch).
    warmup_epochs: int = 1
    # Training epochs; the learning rate decays linearly to 0 at the end (--epoch).
    epochs: int = 40
    # CTs per global batch, each with all of its readers (--batch).
    batch_size: int = 2
    # Weight of the duration loss (--lambda_1).
    duration_loss_weight: float = 1.0
    # Global-norm gradient clipping; null = none (--clip; the original's -1 means none).
    clip_grad_norm: Union[float, None] = None
    # Micro-batches accumulated per optimizer step.
    grad_accum_steps: int = 1
    # One forward per CT, loss over all its readers (off = repeat the forward per reader, as the original).
    share_forward_across_readers: bool = True
    # Give the very first step lr 0, as the original's LambdaLR does.
    legacy_first_step_lr_zero: bool = False
    # Spatial loss as the original: -sum t*log(softmax+1e-7) (default: stable log_softmax).
    legacy_loss_epsilon: bool = False
    # Devices on the `fsdp` mesh axis (1 = parameters replicated).
    fsdp: int = 1
    # Log training metrics every N steps (and, when stderr is not a terminal, a progress line).
    log_every: int = 10
    # Dashboards besides metrics.jsonl: any of tensorboard, wandb (wandb: the [wandb] extra).
    tracker: tuple[str, ...] = ("tensorboard",)
    # Weights & Biases project of the run (when train.tracker lists wandb).
    wandb_project: str = "ctsearcher-jax"
    # Evaluate and checkpoint every N epochs.
    eval_every_epochs: int = 1
    # At each evaluation also sample scanpaths and score eval.metrics (off = eval loss only).
    eval_scanpath_metrics: bool = True
    # Also checkpoint every N optimizer steps (0 = only at evaluations, the end and SIGTERM).
    checkpoint_every_steps: int = 0
    # Checkpoints kept: the most recent N.
    keep_last: int = 2
    # Checkpoints kept: the best K by eval.best_metric.
    keep_best: int = 1

    def __post_init__(self) -> None:
        _check(0 <= self.seed <= MAX_SEED, "train.seed", f"must be in [0, {MAX_SEED}]")
        _check(0 < self.lr <= 1, "train.lr", "must be in (0, 1]")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)")
        _check(0 < self.eps < 1, "train.eps", "must be in (0, 1)")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(0 <= self.warmup_epochs <= self.epochs, "train.warmup_epochs",
               "must be in [0, train.epochs]")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.duration_loss_weight >= 0, "train.duration_loss_weight", "must be >= 0")
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0, "train.clip_grad_norm",
               "must be > 0 or null")
        _check(self.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1")
        _check(self.fsdp >= 1, "train.fsdp", "must be >= 1")
        _check(self.log_every >= 1, "train.log_every", "must be >= 1")
        unknown = [t for t in self.tracker if t not in ("tensorboard", "wandb")]
        _check(not unknown, "train.tracker", f"unknown {unknown}; choose from tensorboard, wandb")
        _check(self.eval_every_epochs >= 1, "train.eval_every_epochs", "must be >= 1")
        _check(self.checkpoint_every_steps >= 0, "train.checkpoint_every_steps", "must be >= 0")
        _check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        _check(self.keep_best >= 0, "train.keep_best", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Sampling and scoring of predicted scanpaths."""

    # No stop is sampled before this many fixations (--min_length).
    min_length: int = 100
    # Scanpaths sampled per reader and CT (--eval_repeat_num).
    repeats: int = 1
    # Metric families (names in metrics/registry.py); default: the original's "all" (first three).
    metrics: tuple[str, ...] = DEFAULT_FAMILIES
    # MultiMatch saccade alignment: "exact" (scipy Dijkstra, as the original) or "dp" (jit DP).
    multimatch_alignment: Literal["exact", "dp"] = "exact"
    # SED character code: "legacy" (the original's, with collisions) or "bijective".
    sed_code: Literal["legacy", "bijective"] = "legacy"
    # Sample durations as exp(mu + sigma2*eps) like the original (default: exp(mu + sqrt(sigma2)*eps)).
    legacy_duration_sampling: bool = False
    # Metric selecting the best checkpoint, with its direction taken from the metric registry.
    best_metric: str = "scanmatch_with_duration"
    # Seed for sampling during evaluation.
    seed: int = 0
    # Autoregressive architectures only: softmax temperature of the cell draws (P(STOP) is kept).
    temperature: float = 1.0
    # Autoregressive architectures only: draw each cell among the k most likely (0 = all).
    top_k: int = 0

    def __post_init__(self) -> None:
        _check(0 <= self.min_length <= 10000, "eval.min_length", "must be in [0, 10000]")
        _check(0 <= self.seed <= MAX_SEED, "eval.seed", f"must be in [0, {MAX_SEED}]")
        _check(0 < self.temperature <= 1000, "eval.temperature", "must be in (0, 1000]")
        _check(0 <= self.top_k <= 65537, "eval.top_k", "must be in [0, 65537] (0 = no top-k)")
        _check(self.repeats >= 1, "eval.repeats", "must be >= 1")
        unknown = [m for m in self.metrics if m not in FAMILIES]
        _check(not unknown and len(self.metrics) > 0, "eval.metrics",
               f"unknown {unknown}; choose from {list(FAMILIES)}")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """Swin UNETR feature extraction from CT volumes."""

    # Swin UNETR width (48 = the BTCV weights; any multiple of 12).
    feature_size: int = 48
    # PatchMerging offsets: "legacy" (BTCV weights, released features) or "fixed" (MONAI >= 1.5).
    merging_order: Literal["legacy", "fixed"] = "legacy"
    # Lower end of the HU window scaled to 0.
    hu_min: float = -175.0
    # Upper end of the HU window scaled to 1.
    hu_max: float = 250.0
    # Sliding-window size in voxels per axis.
    roi: int = 96
    # Fraction of overlap between neighbouring windows, in [0, 1).
    overlap: float = 0.0
    # Windows per device batch.
    batch: int = 4
    # Compute dtype of the encoder.
    dtype: Literal["float32", "bfloat16"] = "float32"
    # How window features are combined: "original" (cell average), "gaussian" or "constant" blending.
    merge: Literal["original", "gaussian", "constant"] = "original"
    # Reorient volumes to RAS before extraction (off = stored voxel order, as the original).
    canonical: bool = False
    # Largest volume read, in voxels its header claims (2^30 = data.nifti.DEFAULT_MAX_VOXELS;
    # larger files are refused unread; --max-voxels).
    max_voxels: int = 1 << 30
    # GB of decoded volumes the loader threads may hold at once (null = half the machine's
    # memory; --memory-budget).
    memory_budget_gb: Union[float, None] = None

    def __post_init__(self) -> None:
        _check(self.max_voxels >= 1, "extract.max_voxels", "must be >= 1")
        _check(self.memory_budget_gb is None or 0 < self.memory_budget_gb < float("inf"),
               "extract.memory_budget_gb", "must be a finite number > 0, or null")
        _check(self.feature_size >= 12 and self.feature_size % 12 == 0, "extract.feature_size",
               "must be a positive multiple of 12")
        for key in ("hu_min", "hu_max"):
            _check(abs(getattr(self, key)) <= MAX_ABS_HU, f"extract.{key}",
                   f"must be in [-{MAX_ABS_HU:.0e}, {MAX_ABS_HU:.0e}] HU")
        _check(self.hu_max > self.hu_min, "extract.hu_max", "must be > extract.hu_min")
        _check(32 <= self.roi <= 512 and self.roi % 32 == 0, "extract.roi",
               "must be a multiple of 32 in [32, 512]")
        _check(0.0 <= self.overlap < 1.0, "extract.overlap", "must be in [0, 1)")
        _check(1 <= self.batch <= 4096, "extract.batch", "must be in [1, 4096]")


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """ScanMatch-reward fine-tuning (`ctsearcher finetune`): self-critical policy gradient."""

    # Model folder the run starts from (set by `ctsearcher finetune --model`); "" = supervised run.
    source: str = ""
    # Scanpaths sampled per CT and reader each step; their mean reward is the baseline.
    samples: int = 5
    # Fine-tuning learning rate as a fraction of the supervised run's (applied once by the command).
    lr_scale: float = 0.1
    # Fine-tuning epochs (the command sets train.epochs to this; lr decays linearly to 0).
    epochs: int = 5
    # Weight of the supervised loss added to the policy-gradient loss (0 = reward only).
    supervised_weight: float = 0.0
    # Inside the reward, fixations longer than this (seconds) count as this long (fixed shapes).
    duration_cap_s: float = 1.0

    def __post_init__(self) -> None:
        _check(self.samples >= 2, "finetune.samples", "must be >= 2 (the baseline is their mean)")
        _check(self.samples <= 1024, "finetune.samples", "must be <= 1024")
        _check(0 < self.lr_scale <= 10, "finetune.lr_scale", "must be in (0, 10]")
        _check(self.epochs >= 1, "finetune.epochs", "must be >= 1")
        _check(self.supervised_weight >= 0, "finetune.supervised_weight", "must be >= 0")
        _check(self.duration_cap_s >= 0.025, "finetune.duration_cap_s", "must be >= 0.025")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole experiment."""

    # CT-Searcher architecture.
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # Dataset and target construction.
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Optimisation and run control.
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    # Sampling and metrics.
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # Feature extraction.
    extract: ExtractConfig = dataclasses.field(default_factory=ExtractConfig)
    # ScanMatch-reward fine-tuning (inactive unless finetune.source is set).
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)


# The original's command-line flag names, mapped to our keys where the meaning is the same.
UPSTREAM_ALIASES: dict[str, str] = {
    "hidden_dim": "model.d_model",
    "nhead": "model.num_heads",
    "num_encoder": "model.num_encoder_layers",
    "num_decoder": "model.num_decoder_layers",
    "decoder_dropout": "model.dropout",
    "img_hidden_dim": "model.feature_dim",
    "max_length": "model.max_length",
    "img_dir": "data.data_dir",
    "fix_dir": "data.data_dir",
    "feat_dir": "data.feature_dir",
    "blur_sigma": "data.blur_sigma",
    "seed": "train.seed",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "warmup_epoch": "train.warmup_epochs",
    "epoch": "train.epochs",
    "batch": "train.batch_size",
    "lambda_1": "train.duration_loss_weight",
    "clip": "train.clip_grad_norm",
    "min_length": "eval.min_length",
    "eval_repeat_num": "eval.repeats",
}


def from_dict(data: dict[str, Any]) -> Config:
    """Build a validated `Config` from a nested mapping (missing keys take the defaults)."""
    return build_dataclass(Config, data or {})


def to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(config))


def _parse_scalar(text: str) -> Any:
    """Parse an override value with YAML rules (`3e-4`, `true`, `null`, `[8,8,8]`)."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):  # also hostile nesting, huge integers
        return text  # kept as a string: the field's type check names the key
    # YAML 1.1 reads "3e-4" as a string; accept it as a float.
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=v` overrides to a nested dict (returns a new dict).

    A bare upstream flag name (`lr=3e-4`, `hidden_dim=48`) is accepted through `UPSTREAM_ALIASES`.
    """
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected key=value, e.g. train.lr=3e-4")
        key, text = item.split("=", 1)
        key = key.strip()
        key = UPSTREAM_ALIASES.get(key, key)
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(
                f"override '{item}': unknown key '{key}'; use section.field with a section in "
                f"{[f.name for f in dataclasses.fields(Config)]}")
        out.setdefault(parts[0], {})[parts[1]] = _parse_scalar(text)
    return out


def bundled_config_dir() -> Path:
    """The folder of the configs that ship with the package.

    Installed from a wheel: `ctsearcher_jax/configs/` (copied there from the top-level `configs/`
    by setup.py's build step). In a source checkout or an editable install: `configs/` itself.
    """
    package = Path(__file__).resolve().parent
    inside = package / "configs"
    return inside if inside.is_dir() else package.parent / "configs"


def bundled_configs() -> dict[str, Path]:
    """Config name (file stem, e.g. "paper", "tiny") -> YAML file shipped with the package."""
    folder = bundled_config_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A config given by path (`configs/tiny.yaml`, `/abs/run/config.yaml`) or by the name of a
    bundled config (`tiny`, `paper`, also `tiny.yaml`). An existing file always wins over a name.

    Raises ConfigError naming the path and the bundled names when neither exists.
    """
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    bundled = bundled_configs()
    text = str(path)
    name = text[:-5] if text.endswith(".yaml") else text
    if os.sep not in text and "/" not in text and name in bundled:
        return bundled[name]
    names = ", ".join(bundled) or "none found"
    raise ConfigError(f"config file {path} does not exist; pass a YAML path or the name of a "
                      f"bundled config ({names})")


def load(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when `path` is None) and apply dotted overrides.

    `path` is a YAML file or the name of a bundled config (`"paper"`, `"tiny"`; see
    `resolve_path`).
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: "
                              f"{' '.join(str(exc).split())}") from None
        except (RecursionError, ValueError, OSError) as exc:  # hostile nesting, huge ints, I/O
            why = "nested too deeply" if isinstance(exc, RecursionError) else \
                str(exc).splitlines()[0][:200]
            raise ConfigError(f"config file {path} cannot be read ({why})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    if path is not None:
        try:  # the file alone first, so that its errors name it and --set errors do not
            from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if not overrides:
        return from_dict(data)
    data = apply_overrides(data, overrides)
    try:
        return from_dict(data)
    except ConfigError as exc:
        shown = " ".join(o if len(o) <= 80 else o[:77] + "..." for o in overrides)
        raise ConfigError(f"--set {shown}: {str(exc)[:500]}") from None


def dumps(config: Config) -> str:
    """The config as YAML text (the resolved config written into run directories)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)


def write_resolved(config: Config, run_dir: str | os.PathLike[str]) -> Path:
    """Write `config.yaml` (resolved, every field) into `run_dir` atomically; return its path."""
    path = Path(run_dir) / "config.yaml"
    atomic_write_text(path, dumps(config))
    return path
