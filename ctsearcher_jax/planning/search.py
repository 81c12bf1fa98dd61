"""The largest batch that fits, in few compilations: per-chip memory is close to affine in the
per-chip batch b (parameters, optimizer state and code do not grow with b; activations do).

    M(b) = a + c * b          two compilations give a and c (an out-of-memory compile counts
                              too: the compiler says how much it needed)
    b*   = largest multiple of `step` with a + c * b* <= HBM
    a third compilation at b* confirms it: it fits, every point lies on the line, and its
    measured memory plus one more step of slope would exceed the HBM (3 compilations).

Otherwise the search brackets the answer (at most `max_compiles` compilations in all), keeping
the largest batch seen to fit and the smallest seen not to. Until a batch fails it grows: to
the line's b* while the points lie on a rising line, else doubling. Near the HBM limit the TPU
compiler rematerialises activations (memory stops growing with the batch) and keeps some HBM
for itself (batches a little under the HBM fail), so the line's b* can be wrong in either
direction. Between the two ends it takes the chord's crossing of the HBM when every point
lies on the chord, else the middle, always at least an eighth of the gap from either end:
the gap shrinks by that much per compilation and never creeps one batch at a time.
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


def _line(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[float, float]:
    """(a, c) of the line through two (batch, bytes) points."""
    (b1, m1), (b2, m2) = p1, p2
    slope = (m2 - m1) / (b2 - b1)
    return m1 - slope * b1, slope


def _on_line(points: dict[int, int], line: tuple[float, float], hbm: int) -> bool:
    """Whether at least three measured points lie on the line (within 1 % of the HBM)."""
    a, slope = line
    return len(points) >= 3 and all(abs(m - (a + slope * b)) <= 0.01 * hbm
                                    for b, m in points.items())


def _at_hbm(line: tuple[float, float], hbm: int, step: int) -> int:
    """The largest multiple of step the line puts at or under the HBM."""
    a, slope = line
    return int((hbm - a) / slope) // step * step


def _next_batch(lo: int, hi: float, points: dict[int, int], tried: set[int], step: int,
                hbm: int) -> int | None:
    """The next per-chip batch to compile, or None when the search has its answer.

    lo: the largest batch seen to fit (0: none); hi: the smallest seen not to (inf: none);
    points: bytes per chip of every compilation that reported them.
    """
    if hi - lo <= step:
        return None  # bracketed: lo is the largest multiple of step that fits
    known = sorted(points)
    line = _line(*((b, points[b]) for b in known[-2:])) if len(known) >= 2 else None
    rising = line is not None and line[1] > 0
    on_line = rising and _on_line(points, line, hbm)
    if lo and on_line and points.get(lo, hbm) + line[1] * step > hbm:
        return None  # memory proven affine, and one more step would not fit
    if hi == math.inf:
        # nothing failed yet: the line's batch at the HBM when it is usable, else double
        usable = rising and (len(points) < 3 or on_line)
        guess = max(_at_hbm(line, hbm, step) if usable else 2 * lo, lo + step, step)
    else:
        # bracketed: where the chord between the two ends meets the HBM when every point lies
        # on it (regula falsi), else the middle; kept an eighth of the gap from either end, so
        # bytes reported only approximately on failure cannot make it creep one step at a time
        hi = int(hi)
        chord = (_line((lo, points[lo]), (hi, points[hi]))
                 if lo in points and hi in points and points[hi] > points[lo] else None)
        if chord is not None and _on_line(points, chord, hbm):
            guess = _at_hbm(chord, hbm, step)
        else:
            guess = (lo + hi) // 2 // step * step
        # every batch tried is a multiple of step, so hi - lo >= 2 * step and margin <= half of it
        margin = max(step, (hi - lo) // 8 // step * step)
        guess = min(max(guess, lo + margin), hi - margin)
    return guess if guess not in tried else None


def largest_batch(measure: Measure, *, start: int, step: int, hbm: int,
                  max_compiles: int = 8) -> BatchSearch:
    """Largest per-chip batch (a multiple of `step`) whose compiled program fits in `hbm` bytes.

    measure(b) compiles the program at per-chip batch b; start: the first batch to try.
    """
    start = max(step, start // step * step)
    plans: dict[int, ProgramPlan] = {}
    points: dict[int, int] = {}
    order: list[tuple[int, bool, int]] = []

    def run(b: int) -> None:
        plan = measure(b)
        plans[b] = plan
        used = _used(plan)
        if used is not None:
            points[b] = used
        order.append((b, plan.fits, used or 0))

    run(start)
    run(start + max(step, start))
    while len(order) < max_compiles:
        lo = max((b for b, p in plans.items() if p.fits), default=0)
        hi = min((b for b, p in plans.items() if not p.fits), default=math.inf)
        guess = _next_batch(lo, hi, points, set(plans), step, hbm)
        if guess is None:
            break
        run(guess)
    best = max((b for b, p in plans.items() if p.fits), default=0)
    return BatchSearch(best, plans.get(best), tuple(order))
