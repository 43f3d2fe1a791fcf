"""Open-loop load that changes within a trial: steps and linear ramps of arrivals per second.

A :class:`RateSchedule` is a list of steps ``(at_s, rps, ramp_s)``, times from the start of the
measurement: from ``at_s`` the rate moves linearly from where it was to ``rps`` over ``ramp_s``
seconds (0: a step), then holds until the next entry. The first entry is at 0 s with no ramp,
and the warm-up runs at its rate.

:class:`Arrivals` draws the seeded Poisson arrivals of such a rate (a non-homogeneous Poisson
process, by time rescaling: unit-rate exponential gaps on the cumulative planned arrivals
``area(t)``, mapped back through its inverse). A constant rate gives the same arrivals as
``expovariate(rate)`` gaps. Both senders take their send times from it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable


class RateScheduleError(ValueError):
    """A schedule that cannot be sent; the message names the entry and key at fault."""


@dataclass(frozen=True)
class RateStep:
    at_s: float
    rps: float
    ramp_s: float = 0.0


@dataclass(frozen=True)
class RateSchedule:
    steps: tuple[RateStep, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise RateScheduleError("rate_schedule: needs at least one entry")
        for i, step in enumerate(self.steps):
            if not step.rps > 0:
                raise RateScheduleError(f"rate_schedule[{i}].rps: must be positive (got {step.rps!r})")
            if step.ramp_s < 0:
                raise RateScheduleError(f"rate_schedule[{i}].ramp_s: must not be negative (got {step.ramp_s!r})")
        first = self.steps[0]
        if first.at_s != 0 or first.ramp_s != 0:
            raise RateScheduleError("rate_schedule[0]: the first entry sets the starting rate: at_s = 0, no ramp_s")
        for i in range(1, len(self.steps)):
            before, step = self.steps[i - 1], self.steps[i]
            if step.at_s < before.at_s + before.ramp_s or step.at_s <= before.at_s:
                raise RateScheduleError(f"rate_schedule[{i}].at_s: {step.at_s:g} s starts before entry {i - 1} "
                                        f"ends ({before.at_s + before.ramp_s:g} s); entries are in time order")

    @property
    def peak_rps(self) -> float:
        return max(step.rps for step in self.steps)

    def scaled(self, factor: float) -> "RateSchedule":
        """The same shape at ``factor`` times the rates (one generator process's share)."""
        return RateSchedule(tuple(RateStep(s.at_s, s.rps * factor, s.ramp_s) for s in self.steps))

    def _pieces(self) -> list[tuple[float, float, float, float]]:
        """Linear pieces (t0, t1, rate at t0, rate at t1); the last holds to infinity."""
        pieces = []
        rate = self.steps[0].rps
        for i, step in enumerate(self.steps):
            if step.ramp_s > 0:
                pieces.append((step.at_s, step.at_s + step.ramp_s, rate, step.rps))
            rate = step.rps
            end = self.steps[i + 1].at_s if i + 1 < len(self.steps) else math.inf
            pieces.append((step.at_s + step.ramp_s, end, rate, rate))
        return pieces

    def rate_at(self, t: float) -> float:
        """The planned arrivals per second at ``t`` (before 0: the first rate)."""
        for t0, t1, r0, r1 in self._pieces():
            if t < t1:
                return r0 if t < t0 or t1 == t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)
        return self.steps[-1].rps

    def area(self, t: float) -> float:
        """Planned arrivals from 0 to ``t`` (negative before 0, at the first rate)."""
        if t <= 0:
            return t * self.steps[0].rps
        total = 0.0
        for t0, t1, r0, r1 in self._pieces():
            if t <= t0:
                break
            upto = min(t, t1)
            at_upto = r0 if r1 == r0 else r0 + (r1 - r0) * (upto - t0) / (t1 - t0)
            total += (upto - t0) * (r0 + at_upto) / 2
        return total

    def time_of(self, area: float) -> float:
        """The inverse of :meth:`area`: when the planned arrivals reach ``area``."""
        if area <= 0:
            return area / self.steps[0].rps
        done = 0.0
        for t0, t1, r0, r1 in self._pieces():
            piece = math.inf if t1 == math.inf else (t1 - t0) * (r0 + r1) / 2
            if area <= done + piece:
                left = area - done
                if r1 == r0:
                    return t0 + left / r0
                slope = (r1 - r0) / (t1 - t0)  # r0*d + slope*d^2/2 = left
                return t0 + (-r0 + math.sqrt(r0 * r0 + 2 * slope * left)) / slope
            done += piece
        raise AssertionError("the last piece holds forever")

    def planned_rps(self, start_s: float, end_s: float) -> float:
        """The mean planned rate over [start_s, end_s) (a window's planned rate)."""
        return (self.area(end_s) - self.area(start_s)) / (end_s - start_s)

    def as_record(self) -> list[dict[str, float]]:
        return [{"at_s": s.at_s, "rps": s.rps, "ramp_s": s.ramp_s} for s in self.steps]


def constant(rps: float) -> RateSchedule:
    return RateSchedule((RateStep(0.0, rps),))


def parse_schedule(entries: Any, where: str) -> RateSchedule:
    """A schedule from a spec's ``rate_schedule`` list of tables; errors start with ``where``
    (the file and key), then name the entry and key."""
    if not isinstance(entries, list) or not entries:
        raise RateScheduleError(f"{where}: expected a list of tables {{at_s = ..., rps = ..., ramp_s = ...}}, "
                                f"got {entries!r}")
    steps = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RateScheduleError(f"{where}[{i}]: expected a table {{at_s, rps, ramp_s}}, got {entry!r}")
        unknown = set(entry) - {"at_s", "rps", "ramp_s"}
        if unknown:
            raise RateScheduleError(f"{where}[{i}].{sorted(unknown)[0]}: unknown key; allowed: at_s, rps, ramp_s")
        values = {}
        for key in ("at_s", "rps", "ramp_s"):
            value = entry.get(key, 0.0 if key == "ramp_s" else None)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RateScheduleError(f"{where}[{i}].{key}: expected a number, got {value!r}")
            values[key] = float(value)
        steps.append(RateStep(**values))
    try:
        return RateSchedule(tuple(steps))
    except RateScheduleError as error:
        raise RateScheduleError(f"{where}: {error}".replace(f"{where}: rate_schedule", where)) from None


class Arrivals:
    """Seeded Poisson send times (absolute, on the senders' clock) following ``schedule``,
    whose 0 s is ``origin`` (the measurement start); the first arrival comes after ``start_at``.
    ``draw``: the unit-rate gaps (a test passes a constant to place arrivals exactly)."""

    def __init__(self, schedule: RateSchedule, *, seed: int, start_at: float, origin: float | None = None,
                 draw: Callable[[], float] | None = None) -> None:
        self.schedule = schedule
        self.origin = start_at if origin is None else origin
        self._area = schedule.area(start_at - self.origin)
        rng = random.Random(seed)
        self._draw = draw if draw is not None else (lambda: rng.expovariate(1.0))
        # A constant rate adds each gap to the last time, as the senders always did (the same floats).
        self._constant = schedule.steps[0].rps if len(schedule.steps) == 1 else None
        self._time = start_at

    def next(self) -> float:
        if self._constant is not None:
            self._time += self._draw() / self._constant
            return self._time
        self._area += self._draw()
        return self.origin + self.schedule.time_of(self._area)


@dataclass(frozen=True)
class UsersSchedule:
    """A closed loop whose user count steps within the trial: ``steps`` of (at_s, users), times
    from the measurement start (the warm-up runs with the first count). Locust's own
    ``LoadTestShape`` applies it in each generator process (load/users.py ``UsersShape``)."""

    steps: tuple[tuple[float, int], ...]

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0][0] != 0:
            raise RateScheduleError("users_schedule[0]: the first entry sets the starting users: at_s = 0")
        for i, (at_s, users) in enumerate(self.steps):
            if isinstance(users, bool) or not isinstance(users, int) or users < 1:
                raise RateScheduleError(f"users_schedule[{i}].users: must be an integer of at least 1 (got {users!r})")
            if i and at_s <= self.steps[i - 1][0]:
                raise RateScheduleError(f"users_schedule[{i}].at_s: {at_s:g} s is not after entry {i - 1}; "
                                        "entries are in time order")

    @property
    def peak_users(self) -> int:
        return max(users for _, users in self.steps)

    def users_at(self, t: float, worker: int = 0, workers: int = 1) -> int:
        """Users at ``t`` (before 0: the first count), of which worker ``worker`` runs its share."""
        users = self.steps[0][1]
        for at_s, count in self.steps:
            if t >= at_s:
                users = count
        base, extra = divmod(users, workers)
        return base + (1 if worker < extra else 0)

    def user_starts(self, worker: int = 0, workers: int = 1) -> int:
        """How many users worker ``worker`` starts over the schedule (each takes its own request
        stream): its first share plus every increase."""
        shares = [self.users_at(at_s, worker, workers) for at_s, _ in self.steps]
        return shares[0] + sum(max(b - a, 0) for a, b in zip(shares, shares[1:]))

    def as_record(self) -> list[dict[str, float]]:
        return [{"at_s": at_s, "users": users} for at_s, users in self.steps]


def parse_users_schedule(entries: Any, where: str) -> UsersSchedule:
    """A closed loop's ``users_schedule`` list of tables {at_s, users}; errors start with ``where``."""
    if not isinstance(entries, list) or not entries:
        raise RateScheduleError(f"{where}: expected a list of tables {{at_s = ..., users = ...}}, got {entries!r}")
    steps = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"at_s", "users"}:
            raise RateScheduleError(f"{where}[{i}]: expected a table with exactly at_s and users, got {entry!r}")
        at_s = entry["at_s"]
        if isinstance(at_s, bool) or not isinstance(at_s, (int, float)) or not math.isfinite(at_s):
            raise RateScheduleError(f"{where}[{i}].at_s: expected a number, got {at_s!r}")
        steps.append((float(at_s), entry["users"]))
    try:
        return UsersSchedule(tuple(steps))
    except RateScheduleError as error:
        raise RateScheduleError(f"{where}: {error}".replace(f"{where}: users_schedule", where)) from None
