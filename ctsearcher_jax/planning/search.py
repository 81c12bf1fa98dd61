"""The largest batch that fits, in few compilations: per-chip memory is close to affine in the
per-chip batch b (parameters, optimizer state and code do not grow with b; activations do).

    M(b) = a + c * b          two compilations give a and c (an out-of-memory compile counts
                              too: the compiler says how much it needed)
    b*   = largest multiple of `step` with a + c * b* <= HBM
    a third compilation at b* confirms it: it fits, and its measured memory plus one more step
    of slope would exceed the HBM. Otherwise the line is refitted through the newest points
    and the search goes on (at most `max_compiles` in all), keeping the largest batch seen to
    fit and the smallest seen not to.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ctsearcher_jax.planning.analysis import ProgramPlan

Measure = Callable[[int], ProgramPlan]


@dataclasses.dataclass(frozen=True)
class BatchSearch:
    """Result of `largest_batch`: the best per-chip batch, its plan, and every compilation."""

    per_chip: int  # 0 when even the first batch tried does not fit
    plan: ProgramPlan | None
    tried: tuple[tuple[int, bool, int], ...]  # (per-chip batch, fits, bytes per chip) in order

    @property
    def compilations(self) -> int:
        return len(self.tried)


def _used(plan: ProgramPlan) -> int | None:
    if plan.memory is not None:
        return plan.memory.total
    return plan.required_bytes


def _line(points: dict[int, int]) -> tuple[float, float] | None:
    """(a, c) of the line through the two largest batches with known bytes."""
    known = sorted(points)[-2:]
    if len(known) < 2:
        return None
    (b1, m1), (b2, m2) = ((b, points[b]) for b in known)
    slope = (m2 - m1) / (b2 - b1)
    return m1 - slope * b1, slope


def largest_batch(measure: Measure, *, start: int, step: int, hbm: int,
                  max_compiles: int = 8) -> BatchSearch:
    """Largest per-chip batch (a multiple of `step`) whose compiled program fits in `hbm` bytes.

    measure(b) compiles the program at per-chip batch b; start: the first batch to try.
    """
    start = max(step, start // step * step)
    plans: dict[int, ProgramPlan] = {}
    points: dict[int, int] = {}
    order: list[tuple[int, bool, int]] = []

    def run(b: int) -> ProgramPlan:
        plan = measure(b)
        plans[b] = plan
        used = _used(plan)
        if used is not None:
            points[b] = used
        order.append((b, plan.fits, used or 0))
        return plan

    run(start)
    run(start + max(step, start))
    while len(order) < max_compiles:
        fitting = [b for b, p in plans.items() if p.fits]
        failing = [b for b, p in plans.items() if not p.fits]
        lo, hi = max(fitting, default=0), min(failing, default=math.inf)
        line = _line(points)
        if line is None or line[1] <= 0:
            break
        a, slope = line
        if lo and (hi - lo <= step or points.get(lo, hbm) + slope * step > hbm):
            break  # bracketed, or the next step would not fit by the measured slope
        guess = int((hbm - a) / slope) // step * step
        guess = min(max(guess, lo + step), (hi - step) if hi != math.inf else guess)
        if guess in plans or guess < step:
            if lo == 0 or lo + step >= hi:
                break
            guess = lo + step
        run(guess)
    best = max((b for b, p in plans.items() if p.fits), default=0)
    return BatchSearch(best, plans.get(best), tuple(order))
