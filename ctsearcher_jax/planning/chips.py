"""Published per-chip peaks of the TPU generations the planner knows, and topology names.

One row per generation, each number from Google's public documentation (the `source` of the
row). Units: FLOP/s, bytes, bytes/s. `ici_bandwidth` is the chip's bidirectional inter-chip
interconnect bandwidth, all of its links together. Google quotes HBM capacity in GiB for v4 and
v5p and in "GB" for v5e and v6e; those chips carry 16 GiB and 32 GiB (the compiler reports
15.75 GiB usable on v5e), so the table holds GiB throughout.

These peaks drive estimates only (`planning/estimate.py`); whether a program fits is the TPU
compiler's answer, not this table's.
"""

from __future__ import annotations

import dataclasses
import re

from ctsearcher_jax.errors import ConfigError

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation, per chip."""

    name: str  # the name in topology strings, e.g. "v5e" in "v5e:2x2"
    device_kind: str  # libtpu's device_kind of its devices
    bf16_flops: float  # peak bfloat16 matrix FLOP/s
    hbm_bytes: int  # HBM capacity
    hbm_bandwidth: float  # HBM bytes/s
    ici_bandwidth: float  # bidirectional ICI bytes/s over all links
    dims: int  # axes of its topology (2: AxB torus, 3: AxBxC)
    example: str  # a valid topology, shown in errors
    source: str  # where the numbers come from
    # get_topology_desc options: v4 exposes each TensorCore as a device unless told "megacore";
    # our meshes (and `ctsearcher train` on a v4 VM) use one device per chip.
    topology_options: tuple[tuple[str, str], ...] = ()


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("v4", "TPU v4", 275e12, 32 * GIB, 1200e9,
         # 6 links x 90 GB/s bidirectional (4.5e10 B/s each way per link)
         6 * 90e9, 3, "v4:2x2x1",
         "cloud.google.com/tpu/docs/v4 (275 TFLOPs, 32 GiB, 1200 GBps); ICI: 'How to scale your "
         "model', jax-ml.github.io/scaling-book/tpus (v4p 4.5e10 B/s one way per link, 6 links)",
         (("chip_config_name", "megacore"),)),
    Chip("v5e", "TPU v5 lite", 197e12, 16 * GIB, 819e9, 400e9, 2, "v5e:2x2",
         "cloud.google.com/tpu/docs/v5e (197 TFLOPs bf16, 16 GB HBM2 at 819 GBps, bidirectional "
         "ICI 400 GBps per chip)"),
    Chip("v5p", "TPU v5", 459e12, 95 * GIB, 2765e9, 1200e9, 3, "v5p:2x2x1",
         "cloud.google.com/tpu/docs/v5p (459 TFLOPs bf16, 95 GiB HBM2e at 2765 GBps, "
         "bidirectional ICI 1200 GBps per chip)"),
    Chip("v6e", "TPU v6 lite", 918e12, 32 * GIB, 1638e9, 800e9, 2, "v6e:2x2",
         "cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16, 32 GB HBM at 1638 GBps, bidirectional "
         "ICI 800 GBps per chip)"),
)}

_TOPOLOGY = re.compile(r"^(?P<chip>[a-z0-9]+):(?P<shape>\d+(?:x\d+)+)$")


@dataclasses.dataclass(frozen=True)
class Topology:
    """A parsed topology name: `v5p:4x4x4` -> chip v5p, shape (4, 4, 4), 64 chips."""

    name: str
    chip: Chip
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def known_topologies() -> str:
    """The accepted form, for error messages: `v4:AxBxC, v5e:AxB, v5p:AxBxC, v6e:AxB`."""
    forms = {2: "AxB", 3: "AxBxC"}
    return ", ".join(f"{c.name}:{forms[c.dims]} (e.g. {c.example})" for c in CHIPS.values())


def parse_topology(name: str) -> Topology:
    """`chip:AxB[xC]` -> Topology; ConfigError naming the known chips and forms otherwise."""
    text = str(name).strip().lower()
    match = _TOPOLOGY.match(text)
    chip = CHIPS.get(match.group("chip")) if match else None
    if match is None or chip is None:
        raise ConfigError(f"unknown topology {name!r}; known: {known_topologies()}")
    shape = tuple(int(d) for d in match.group("shape").split("x"))
    if len(shape) != chip.dims or min(shape) < 1:
        raise ConfigError(f"topology {name!r}: {chip.name} slices have {chip.dims} axes "
                          f"(e.g. {chip.example}); known: {known_topologies()}")
    return Topology(text, chip, shape)
