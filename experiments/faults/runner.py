"""Plant and clear each scheduled fault at its time, and record what happened.

    runner = FaultRunner(schedule, {"redis_outage": RedisOutage(redis), ...}, RealClock())
    runner.start()              # at the measurement's start: its own thread from here
    ...                         # the load runs
    timeline = runner.finish()  # clears whatever is still injected, returns the Timeline

Steps run in time order on the runner's thread. A step that takes time (a crash waits for the
server to be AVAILABLE again) holds up the steps after it; the timeline shows when each really
happened. The clock is injected: tests drive the runner with :class:`FakeClock`, which jumps to
each step's time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping, Protocol, Sequence

from poochlab.experiments.faults.schedule import UNTIL_RECOVERED, FaultSpec
from poochlab.experiments.faults.timeline import FaultEvent, Timeline


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the measurement started."""

    def wait_until(self, at_s: float, stop: threading.Event) -> bool:
        """Return at ``at_s`` (True), or early when ``stop`` is set (False)."""

    def from_monotonic(self, monotonic_s: float) -> float:
        """A ``time.monotonic()`` reading as seconds since the measurement started."""


class RealClock:
    """Seconds since ``start`` (``time.monotonic()``; default: now)."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.monotonic() if start is None else start

    def now(self) -> float:
        return time.monotonic() - self.start

    def wait_until(self, at_s: float, stop: threading.Event) -> bool:
        return not stop.wait(max(0.0, at_s - self.now()))

    def from_monotonic(self, monotonic_s: float) -> float:
        return monotonic_s - self.start


class FakeClock:
    """A clock for tests: waiting jumps straight to the time waited for."""

    def __init__(self, now: float = 0.0) -> None:
        self._now = now
        self.waits: list[float] = []  # every time waited for, in order

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def wait_until(self, at_s: float, stop: threading.Event) -> bool:
        self.waits.append(at_s)
        if stop.is_set():
            return False
        self._now = max(self._now, at_s)
        return True

    def from_monotonic(self, monotonic_s: float) -> float:
        return self._now  # a fake clock cannot place real instants: everything is "now"


class Injector(Protocol):
    """Plants and clears one kind of fault. Each returns details for the record; a detail
    ``injected_at_s`` / ``cleared_at_s`` (clock seconds) overrides when the step is recorded as
    having happened (a crash: the moment of the kill, and of AVAILABLE again)."""

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]: ...

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]: ...


class FaultRunner:
    def __init__(self, schedule: Sequence[FaultSpec], injectors: Mapping[str, Injector], clock: Clock) -> None:
        missing = sorted({spec.kind for spec in schedule} - set(injectors))
        if missing:
            raise ValueError(f"no injector for fault kind(s) {', '.join(missing)}: this server kind or "
                             "setup cannot plant them")
        self.schedule = list(schedule)
        self.injectors = injectors
        self.clock = clock
        self.timeline = Timeline([FaultEvent(s.kind, s.at_s, s.duration_s) for s in self.schedule])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: set[int] = set()  # indexes of faults injected and not yet cleared

    def _steps(self) -> list[tuple[float, int, int, str]]:
        steps = []
        for index, spec in enumerate(self.schedule):
            # A crash is cleared (its recovery awaited) right after it is planted.
            clear_at = spec.at_s if spec.kind in UNTIL_RECOVERED else spec.clear_at_s
            steps.append((spec.at_s, 1, index, "inject"))
            # At equal times other faults' clears go first (a fault ending at 10 s is gone before
            # one starting at 10 s); a fault's own clear always follows its inject.
            steps.append((clear_at, 2 if clear_at == spec.at_s else 0, index, "clear"))
        return sorted(steps)

    def run(self) -> Timeline:
        """Run every step in the caller's thread; returns the timeline (see :meth:`finish`)."""
        try:
            for at_s, _, index, action in self._steps():
                if action == "clear" and index not in self._active:
                    continue  # never injected (it failed, or the runner stopped)
                if not self.clock.wait_until(at_s, self._stop):
                    break
                self._do(index, action)
        finally:
            for index in sorted(self._active):  # never leave a fault behind (Redis down, a slow model)
                self._do(index, "clear", early=True)
        return self.timeline

    def _do(self, index: int, action: str, early: bool = False) -> None:
        spec, event = self.schedule[index], self.timeline.events[index]
        injector = self.injectors[spec.kind]
        before = self.clock.now()
        try:
            detail = dict(getattr(injector, action)(spec, self.clock))
        except Exception as error:  # recorded: the trial goes on, the record says the fault failed
            event.detail[f"{action}_error"] = f"{type(error).__name__}: {error}"
            if action == "inject":
                # It may be half planted (a Redis killed, then failing to report): try to clear it.
                self._active.add(index)
            else:
                self._active.discard(index)
            return
        at = detail.pop("injected_at_s" if action == "inject" else "cleared_at_s", before)
        if action == "inject":
            event.injected_at_s = at
            self._active.add(index)
        else:
            event.cleared_at_s = at
            self._active.discard(index)
            if early:
                detail["cleared_early"] = True  # the trial ended or stopped before its planned end
        event.detail.update(detail)

    @property
    def done(self) -> bool:
        """Every step has run (or the runner was stopped): started, and its thread is over."""
        return self._thread is not None and not self._thread.is_alive()

    def start(self) -> None:
        """Run in a thread of its own (call at the measurement's start)."""
        self._thread = threading.Thread(target=self.run, name="fault-runner", daemon=True)
        self._thread.start()

    def finish(self, timeout_s: float | None = None) -> Timeline:
        """Stop waiting for later faults, clear those still planted, and return the timeline."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.timeline

    def wait(self, timeout_s: float | None = None) -> Timeline:
        """Wait for every step to run (tests, or a trial that outlasts its schedule)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.timeline
