"""CPU placement: pin the server, the load generator and Redis to separate cores when there are enough.

``sched_setaffinity`` on a pid moves only that thread, so every thread of a process
(``/proc/<pid>/task``) is pinned. The previous affinities are kept so they can be restored after
the trial. The plan is recorded either way, with the reason when nothing was pinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _threads(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@dataclass
class Placement:
    """Which cores each role got; ``restore()`` undoes the pinning."""

    pinned: bool
    roles: dict[str, list[int]]
    reason: str
    _previous: dict[int, set[int]] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "cores": self.roles, "reason": self.reason,
                "available_cores": sorted(available_cores())}

    def restore(self) -> None:
        for tid, cores in self._previous.items():
            try:
                os.sched_setaffinity(tid, cores)
            except OSError:
                pass  # the thread is gone
        self._previous.clear()


def available_cores() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def plan_and_pin(server_pid: int | None, generator_pids: list[int], redis_pid: int | None,
                 *, enabled: bool = True) -> Placement:
    """Give the server, Redis and the generator disjoint cores if the machine has enough."""
    cores = sorted(available_cores())
    roles = {"server": [server_pid] if server_pid else [], "redis": [redis_pid] if redis_pid else [],
             "generator": list(generator_pids)}
    wanted = [role for role in ("server", "redis", "generator") if roles[role]]
    if not enabled:
        return Placement(False, {}, "pinning disabled by the trial's settings")
    if not hasattr(os, "sched_setaffinity"):
        return Placement(False, {}, "this platform has no sched_setaffinity")
    if len(cores) < len(wanted):
        return Placement(False, {}, f"{len(cores)} cores for {len(wanted)} roles ({', '.join(wanted)}): not pinned")
    assignment: dict[str, list[int]] = {}
    for position, role in enumerate(wanted[:-1]):
        assignment[role] = [cores[position]]
    assignment[wanted[-1]] = cores[len(wanted) - 1:]  # the last role (generator) gets the rest
    placement = Placement(True, assignment, "separate cores per role")
    for role, pids in roles.items():
        for pid in pids:
            for tid in _threads(pid):
                try:
                    placement._previous[tid] = set(os.sched_getaffinity(tid))
                    os.sched_setaffinity(tid, assignment[role])
                except OSError as error:
                    placement.reason += f"; could not pin {role} thread {tid}: {error.strerror}"
    return placement
