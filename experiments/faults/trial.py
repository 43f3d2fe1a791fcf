"""A trial's faults as ``measure_trial`` sees them: start the schedule at the measurement's
start, say when the trial may end, and clear everything at its end.

    faults = FaultTrial(schedule, injectors, slo_ms=100)
    measure_trial(settings, client, workload, record, faults=faults)

A fault trial does not stop when its windows look stable (the fault has to happen first): it
runs at least ``settings.max_windows`` windows, until every step of the schedule has run, and
``AFTER_FAULT_S`` past the last fault's end, so the recovery can be seen.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from poochlab.experiments.faults.runner import FaultRunner, Injector, RealClock
from poochlab.experiments.faults.schedule import FaultSpec

AFTER_FAULT_S = 5.0
# A fault trial's windows last at most this long, so a recovery can be timed to within one.
FAULT_WINDOW_S = 1.0


class FaultTrial:
    def __init__(self, schedule: Sequence[FaultSpec], injectors: Mapping[str, Injector], *, slo_ms: float,
                 after_fault_s: float = AFTER_FAULT_S) -> None:
        self.schedule = list(schedule)
        self.injectors = injectors
        self.slo_ms = slo_ms
        self.after_fault_s = after_fault_s
        self.runner: FaultRunner | None = None
        self.events: list[dict[str, Any]] = []

    def start(self, measure_start: float) -> None:
        """Called with the trial's ``time.monotonic()`` measurement start (before it comes)."""
        self.runner = FaultRunner(self.schedule, self.injectors, RealClock(start=measure_start))
        self.runner.start()

    def may_end(self, measured_s: float) -> bool:
        """May the trial stop after ``measured_s`` seconds of windows?"""
        if self.runner is None or not self.runner.done:
            return False
        ends = [s.clear_at_s for s in self.schedule]
        ends += [e.cleared_at_s for e in self.runner.timeline.events if e.cleared_at_s is not None]
        return measured_s >= max(ends, default=0.0) + self.after_fault_s

    def finish(self) -> list[dict[str, Any]]:
        """Clear whatever is still planted; the timeline (seconds since the measurement start)."""
        if self.runner is not None and not self.events:
            self.events = self.runner.finish().to_json()
        return self.events
