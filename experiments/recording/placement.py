"""CPU placement: pin the server, the load generator and Redis to separate cores when there are
enough, and raise their scheduling priority above the machine's other work where allowed.

"Enough" means one core more than the roles need (Redis one, each generator worker one, the
server the rest): on a 2-core machine pinning would halve the server's CPUs and tie the
generator to one busy core, which measured worse than not pinning, so trials skip it there.
``sched_setaffinity`` and ``setpriority`` act on one thread, so every thread of a process
(``/proc/<pid>/task``) is changed; threads created later inherit from their creator. The previous
values are kept and restored after the trial. The plan is recorded either way, with the reason
when something was not done. Benches plan by the same rule with no core to spare (``bench_placement``): their servers
take the server's role, the bench process and its clients the generator's.

Priority: on a shared machine a waking generator waits behind other processes for a CPU and its
sends go out late (measured: lateness p50 0.35-0.54 ms at nice 0, 0.12 ms at nice -10, same
load). ``ROLE_NICE`` (-10) is applied to the server and Redis, and ``GENERATOR_NICE`` (-20) to the
generator, so on a machine where all three share the cores the instrument runs first and the
system under test takes the wait: with the generator one step ahead, the cache path's send
lateness p99 fell from 1.96-2.02 ms to 1.73-1.93 ms at 190-640 req/s (against 2 ms allowed), and
the plain path's from 1.01-1.37 to 0.82-0.96 ms. Without the privilege both stay 0.

Nice only weighs the fair scheduler; a waking generator can still wait for a server thread's slice
to end (this kernel's EEVDF lets the running task finish its slice). So where allowed the
generator's threads also run under ``SCHED_FIFO`` (``GENERATOR_RT_PRIORITY``): a waking sender
preempts any time-shared thread at once. It uses little CPU at the rates trials plan (under 30%,
and a trial over 80% is invalid anyway), and the kernel's real-time throttling keeps 5% of each
core for the rest. Measured on 16 trials at 70-230 req/s (REST and gRPC, cache off and on, quiet
machine): send lateness p99 0.45-0.59 ms against 0.63-1.26 ms at nice -20 on the uncached paths,
1.08-1.36 against 0.74-1.72 ms on the cached ones. ``POOCHLAB_GENERATOR_POLICY=nice`` keeps the
generator time-shared (nice only).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


ROLE_NICE = -10
GENERATOR_NICE = -20
GENERATOR_RT_PRIORITY = 10


@dataclass
class Placement:
    """Which cores each role got and its priority; ``restore()`` undoes both."""

    pinned: bool
    roles: dict[str, list[int]]
    reason: str
    _previous: dict[int, set[int]] = field(default_factory=dict)
    nice: int | None = None
    nice_note: str = ""
    _previous_nice: dict[int, int] = field(default_factory=dict)
    realtime: int | None = None
    _previous_policy: dict[int, tuple[int, int]] = field(default_factory=dict)
    available: list[int] = field(default_factory=lambda: sorted(available_cores()))

    def as_record(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "cores": self.roles, "reason": self.reason,
                "available_cores": self.available, "nice": self.nice, "realtime_priority": self.realtime,
                "nice_note": self.nice_note}

    def raise_priority(self, pids: list[int], nice: int = ROLE_NICE, role: str = "server and Redis") -> None:
        def change(tid: int) -> None:
            previous = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, nice)
            self._previous_nice.setdefault(tid, previous)

        changed = self._each_thread(pids, change, role, f"at nice {nice}")
        if changed and (self.nice is None or nice < self.nice):
            self.nice = nice  # the highest priority given to any role

    def raise_to_realtime(self, pids: list[int], priority: int = GENERATOR_RT_PRIORITY,
                          role: str = "generator") -> None:
        """Put every thread of ``pids`` under SCHED_FIFO where allowed (the note says where not)."""
        def change(tid: int) -> None:
            previous = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
            self._previous_policy.setdefault(tid, previous)

        if self._each_thread(pids, change, role, f"SCHED_FIFO {priority}"):
            self.realtime = priority

    def _each_thread(self, pids: list[int], change: Callable[[int], None], role: str, what: str) -> int:
        """``change`` every thread of ``pids``, note how many it changed (and could not): the count."""
        changed = failed = 0
        for pid in pids:
            for tid in _threads(pid):
                try:
                    change(tid)
                    changed += 1
                except OSError:
                    failed += 1
        note = (f"{role}: {changed} threads {what}" + (f", {failed} not allowed" if failed else "")
                if pids else f"{role}: no processes")
        self.nice_note = f"{self.nice_note}; {note}" if self.nice_note else note
        return changed

    def cores(self, role: str) -> set[int] | None:
        """The cores of ``role``; None when this placement pins nothing."""
        return set(self.roles[role]) if self.pinned and role in self.roles else None

    def pin_self(self, role: str = "generator0") -> None:
        """Run the calling thread, and every process it starts from now on, on ``role``'s cores."""
        cores = self.cores(role)
        if cores is not None:
            self._previous.setdefault(threading.get_native_id(), set(os.sched_getaffinity(0)))
            os.sched_setaffinity(0, cores)

    @contextlib.contextmanager
    def as_role(self, role: str, back: str = "generator0") -> Iterator[None]:
        """Inside: the calling thread runs on ``role``'s cores, so a process started here inherits
        them (children and their threads inherit the creator's affinity); then back to ``back``'s."""
        cores = self.cores(role)
        if cores is None:
            yield
            return
        os.sched_setaffinity(0, cores)
        try:
            yield
        finally:
            os.sched_setaffinity(0, self.cores(back) or cores)

    def restore(self) -> None:
        for tid, (policy, priority) in self._previous_policy.items():
            try:
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
            except OSError:
                pass  # the thread is gone
        self._previous_policy.clear()
        for tid, cores in self._previous.items():
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:
                pass  # the thread is gone
        self._previous.clear()
        for tid, nice in self._previous_nice.items():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except OSError:
                pass
        self._previous_nice.clear()


def available_cores() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def plan_and_pin(server_pid: int | None, generator_pids: list[int], redis_pid: int | None,
                 *, enabled: bool = True) -> Placement:
    """Give the server, Redis and each generator worker their own cores if the machine has one
    core to spare, and raise all their priorities (both only when ``enabled``)."""
    placement = _pin(server_pid, generator_pids, redis_pid, enabled)
    if enabled:
        placement.raise_priority([pid for pid in (server_pid, redis_pid) if pid])
        generators = [pid for pid in generator_pids if pid]
        placement.raise_priority(generators, GENERATOR_NICE, "generator")
        if os.environ.get("POOCHLAB_GENERATOR_POLICY", "fifo") == "fifo" and hasattr(os, "SCHED_FIFO"):
            placement.raise_to_realtime(generators)
    return placement


def core_plan(generators: int, redis: bool, server: bool, cores: list[int] | None = None,
              spare: int = 1) -> tuple[dict[str, list[int]] | None, str]:
    """The one placement rule, for trials and benches alike: each generator (``generator<i>``) and
    Redis get a core of their own from the top, the server keeps every remaining core, and only
    when ``spare`` cores are left over; otherwise no role is pinned (None and the reason).

    Trials ask for one to spare: the server's throughput is what they measure, and on 2 cores
    pinning halved it. Benches of the instrument ask for none: there the generator and the
    server it is measured against must not share a core, so each one's CPU is its own."""
    cores = sorted(available_cores()) if cores is None else sorted(cores)
    if not hasattr(os, "sched_setaffinity"):
        return None, "this platform has no sched_setaffinity"
    needed = generators + (1 if redis else 0) + (1 if server else 0)
    if len(cores) < needed + spare:
        return None, (f"{len(cores)} cores: pinning {needed} roles needs {needed + spare}"
                      + (f" ({spare} to spare)" if spare else "") + ", not pinned")
    assignment: dict[str, list[int]] = {}
    free = list(cores)
    for position in range(generators):
        assignment[f"generator{position}"] = [free.pop()]
    if redis:
        assignment["redis"] = [free.pop()]
    if server:
        assignment["server"] = free  # the server keeps every remaining core
    return assignment, "separate cores per role"


def _pin(server_pid: int | None, generator_pids: list[int], redis_pid: int | None, enabled: bool) -> Placement:
    if not enabled:
        return Placement(False, {}, "placement disabled by the trial's settings")
    assignment, reason = core_plan(len(generator_pids), bool(redis_pid), bool(server_pid))
    if assignment is None:
        return Placement(False, {}, reason)
    pids_by_role: dict[str, list[int]] = {f"generator{position}": [pid] for position, pid in enumerate(generator_pids)}
    if redis_pid:
        pids_by_role["redis"] = [redis_pid]
    if server_pid:
        pids_by_role["server"] = [server_pid]
    placement = Placement(True, assignment, reason)
    for role, pids in pids_by_role.items():
        for pid in pids:
            for tid in _threads(pid):
                try:
                    placement._previous[tid] = set(os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, assignment[role])
                except OSError as error:
                    placement.reason += f"; could not pin {role} thread {tid}: {error.strerror}"
    return placement


def bench_placement(redis: bool = False) -> Placement:
    """A bench's plan, by the same rule with no core to spare: the servers it starts share the
    ``server`` role, this process and the clients it starts (wrk, the bare loop, Locust workers)
    are ``generator0``; Redis gets a core of its own when there is one, else the server's.

    Nothing is pinned yet: the bench calls :meth:`Placement.pin_self` once, then starts each
    server inside :meth:`Placement.as_role` so that it inherits the server's cores.
    """
    assignment, reason = core_plan(1, redis, True, spare=0)
    if assignment is None and redis:
        assignment, reason = core_plan(1, False, True, spare=0)
        if assignment is not None:
            assignment["redis"] = assignment["server"]
            reason += "; Redis shares the server's cores"
    return Placement(assignment is not None, assignment or {}, reason)
