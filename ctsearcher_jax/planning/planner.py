"""`plan(...)`: compile the chosen programs for a TPU topology and collect what fits.

    topology devices (libtpu, compile-only) -> per program: its per-chip batch (given, the
    command's default, or the largest that fits) -> build (`programs.build`) -> compile and
    read (`analysis.analyse`)

A global batch given by the caller must divide over the program's chips (train and finetune:
every chip; predict and extract: one host's chips, as those commands run per host).
"""

from __future__ import annotations

import dataclasses
import logging

from ctsearcher_jax.config import Config
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.planning import programs as prog
from ctsearcher_jax.planning.analysis import ProgramPlan, analyse
from ctsearcher_jax.planning.chips import Topology, parse_topology
from ctsearcher_jax.planning.search import BatchSearch, largest_batch
from ctsearcher_jax.planning.topology import topology_devices

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every program's plan on one topology; `searches` holds the `--largest-batch` searches."""

    topology: Topology
    config_name: str
    plans: tuple[ProgramPlan, ...]
    searches: dict[str, BatchSearch]


def per_chip_batch(name: str, batch: int, chips: int, topology: Topology) -> int:
    """`batch` / `chips`; ConfigError naming both numbers when it does not divide."""
    where = "chips" if name in ("train", "finetune") else "chips of one host"
    if batch < 1 or batch % chips:
        raise ConfigError(f"{name}: batch {batch} does not divide over the {chips} {where} of "
                          f"{topology.name}; use a multiple of {chips}")
    return batch // chips


def expand(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Program names in their order, "all" = every program."""
    chosen = set()
    for name in names:
        if name == "all":
            chosen.update(prog.PROGRAMS)
        elif name in prog.PROGRAMS:
            chosen.add(name)
        else:
            raise ConfigError(f"unknown program {name!r}; choose from "
                              f"{', '.join(prog.PROGRAMS)} or all")
    return tuple(p for p in prog.PROGRAMS if p in chosen)


def plan(topology_name: str, config: Config, names: list[str] | tuple[str, ...], *,
         batch: int | None = None, per_chip: int | None = None, max_batch: bool = False,
         readers: int = 2, samples: int = 1, config_name: str = "", on_plan=None) -> Plan:
    """Compile programs `names` of `config` for `topology_name` (e.g. "v5e:2x2").

    batch: global batch per call for every chosen program; per_chip: the batch per chip instead
    (None for both: each command's default).
    max_batch: search the largest per-chip batch that fits instead (starting from the batch).
    on_plan: called with each ProgramPlan as soon as it is compiled (progress).
    """
    topology = parse_topology(topology_name)
    chosen = expand(names)
    devices = topology_devices(topology)
    host = prog.host_devices(devices)
    plans: list[ProgramPlan] = []
    searches: dict[str, BatchSearch] = {}
    for name in chosen:
        chips = len(devices) if name in ("train", "finetune") else len(host)
        if batch is not None:
            start = per_chip_batch(name, batch, chips, topology)
        elif per_chip is not None:
            start = per_chip
        else:
            start = prog.default_per_chip(name, config, len(devices), len(host))

        compiled: list[ProgramPlan] = []

        def measure(b: int, name: str = name, chips: int = chips) -> ProgramPlan:
            _log.info(f"{topology.name} {name}: compiling for batch {b * chips} ({b} per chip)")
            result = analyse(prog.build(name, config, devices, b, readers=readers,
                                        samples=samples), topology.chip)
            compiled.append(result)
            if on_plan is not None:
                on_plan(result)
            return result

        if max_batch:
            step = config.train.grad_accum_steps if name in ("train", "finetune") else 1
            search = largest_batch(measure, start=start, step=step,
                                   hbm=topology.chip.hbm_bytes)
            searches[name] = search
            # the largest batch that fits, else the first one tried (which does not)
            plans.append(search.plan if search.plan is not None else compiled[0])
            continue
        plans.append(measure(start))
    return Plan(topology, config_name, tuple(plans), searches)
