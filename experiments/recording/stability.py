"""When a measurement is stable: perf_analyzer's rule over measurement windows.

A trial is stable when, over its last ``STABLE_WINDOWS`` windows, the largest throughput is within
``STABLE_TOLERANCE`` of the smallest, and the same holds for the p99 latency. Only those windows
are merged into the trial's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

STABLE_WINDOWS = 3
STABLE_TOLERANCE = 0.10


@dataclass(frozen=True)
class WindowSummary:
    index: int
    throughput_rps: float
    p99_us: float


def within_tolerance(values: Sequence[float], tolerance: float = STABLE_TOLERANCE) -> bool:
    """max/min of ``values`` is at most 1 + tolerance (all zeros count as agreeing)."""
    low, high = min(values), max(values)
    if high == 0:
        return True
    if low <= 0:
        return False
    return high / low <= 1.0 + tolerance


def is_stable(windows: Sequence[WindowSummary], count: int = STABLE_WINDOWS,
              tolerance: float = STABLE_TOLERANCE) -> bool:
    """True when the last ``count`` windows agree on throughput and p99 within ``tolerance``."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    if any(w.throughput_rps == 0 for w in last):
        return False  # no answers at all is not a steady state worth reporting
    return (within_tolerance([w.throughput_rps for w in last], tolerance)
            and within_tolerance([w.p99_us for w in last], tolerance))
