"""Timing shared by the benchmarks: calls interleaved in one process, medians, and the noise floor.

Every comparison is printed beside its noise floor: the same plain call timed twice, interleaved with
the others, as its own ratio (``plain again / plain``). A ratio no further from 1 than the floor is
said to be inside the noise. The thread count and OpenMP wait policy are fixed by the caller and
printed with the results.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

FLOOR = "plain again (noise floor)"


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each call, the calls taken in turn ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def with_floor(plain: Callable[[], object], others: dict[str, Callable[[], object]]) -> dict:
    """The calls to time: ``plain``, the same again as the noise floor, then ``others``."""
    return {"plain": plain, FLOOR: plain, **others}


def ratios(medians: dict[str, float]) -> tuple[float, float, dict[str, float]]:
    """(plain seconds, noise floor ratio, {name: ratio to plain}) from ``interleaved``'s medians."""
    plain = medians["plain"]
    floor = medians[FLOOR] / plain
    return plain, floor, {k: v / plain for k, v in medians.items() if k not in ("plain", FLOOR)}


def said(ratio: float, floor: float) -> str:
    """A ratio as printed: with "(inside the noise)" when it is no further from 1 than the floor."""
    inside = abs(ratio - 1) <= abs(floor - 1)
    return f"{ratio:.3f}" + (" (inside the noise)" if inside else "")


def setting() -> str:
    """The line every benchmark prints: torch threads and the OpenMP wait policy."""
    return f"torch threads {torch.get_num_threads()} · OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
