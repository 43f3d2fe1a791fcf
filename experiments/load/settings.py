"""How load is applied in one trial: one frozen, validated data object."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from poochlab.experiments.load.rate_schedule import RateSchedule, UsersSchedule

MODES = ("closed", "open")
AUTO_WORKERS = "auto"
# How gRPC is sent (load/worker_spec.py sends_on_threads): unset, on OS threads
# (load/thread_sender.py) except a closed loop on the lean client, on its users' greenlets;
# "threads" always on threads; "gevent" the old way (grpcio under gevent). The last two are for
# `poochlab bench generator`'s comparisons.
GRPC_SENDER_ENV = "POOCHLAB_GRPC_SENDER"
# Open-loop rate one generator process sends validly (requests/s), per client path, measured
# with `poochlab bench generator` on our 2-core machines (generator and echo server on their own
# cores). grpc-grpcio: grpcio alone spends 0.3-0.4 ms of CPU per blocking call; with the lab's
# hand-offs and recording one process used ~60% of its core at 1,000/s. grpc (the lean client):
# 27% at 600/s, 47% at 1,200/s. rest-requests is an estimate from that library's ~0.9 ms of CPU
# per call (`poochlab bench clients`).
PER_PROCESS_RATE_RPS = {"rest": 2000.0, "rest-requests": 500.0, "grpc": 2000.0, "grpc-grpcio": 1200.0}


def workers_for(setting: int | str, *, protocol: str, library: str | None, mode: str,
                rate_rps: float | None = None, users: int = 1) -> int:
    """How many generator processes a trial uses (a spec's ``[load] workers``).

    A number is taken as it is, except that a closed loop never gets more processes than users.
    ``"auto"``: an open loop gets ceil(rate / the path's ``PER_PROCESS_RATE_RPS``), a closed loop
    one process (its users wait for their answers; measured, one process keeps up with them).
    """
    if setting != AUTO_WORKERS:
        count = int(setting)
        return min(count, users) if mode == "closed" else count
    if mode != "open" or not rate_rps:
        return 1
    named: dict[tuple[str, str | None], str] = {("rest", "requests"): "rest-requests", ("grpc", "grpcio"): "grpc-grpcio"}
    path = named.get((protocol, library), protocol)
    if path not in PER_PROCESS_RATE_RPS:
        raise ValueError(f"no per-process rate known for client path {path!r}; known: {sorted(PER_PROCESS_RATE_RPS)}")
    return max(1, math.ceil(rate_rps / PER_PROCESS_RATE_RPS[path]))


@dataclass(frozen=True)
class LoadSettings:
    """The load of one trial.

    ``mode="closed"``: ``users`` concurrent Locust users, each sending its next request when the
    answer to the last one arrives (``pacing`` 0), or starting one request every ``pacing``
    seconds (Locust's ``constant_pacing``). Percentiles come with the coordinated-omission
    corrected twin. ``mode="open"``: Poisson arrivals at ``rate_rps`` in total (seeded),
    no limit on outstanding requests, latency measured from each request's scheduled send time.

    Time: ``warmup_s`` of unrecorded load, then windows of ``window_s`` until the last three agree
    within their sampling error (recording/stability.py) and at least ``min_windows`` were measured,
    at most ``max_windows``.
    ``workers`` generator processes share the load (users or rate split evenly); their
    histograms are merged losslessly. ``pin_cpus`` pins server, generator and Redis to separate
    cores when the machine has one to spare, and raises their priority (recording/placement.py);
    the placement is recorded either way. ``drain_s``: how long requests in flight at the end
    may still answer before they count as timeouts.
    """

    mode: Literal["closed", "open"] = "closed"
    users: int = 1
    rate_rps: float | None = None
    window_s: float = 5.0
    warmup_s: float = 2.0
    min_windows: int = 3
    max_windows: int = 10
    workers: int = 1
    seed: int = 0
    pacing: float = 0.0
    pin_cpus: bool = True
    drain_s: float = 2.0
    # Open loop: a rate that changes within the trial (load/rate_schedule.py), 0 s at the
    # measurement start; ``rate_rps`` is then its peak (what the path must be able to send).
    rate_schedule: RateSchedule | None = None
    # Closed loop: users that change within the trial (Locust's LoadTestShape); ``users`` is its peak.
    users_schedule: UsersSchedule | None = None

    def __post_init__(self) -> None:
        if self.rate_schedule is not None and self.rate_rps is None:
            object.__setattr__(self, "rate_rps", self.rate_schedule.peak_rps)
        if self.users_schedule is not None and self.users == 1:
            object.__setattr__(self, "users", self.users_schedule.peak_users)
        def require(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"load settings: {message}")

        require(self.mode in MODES, f"mode must be one of {MODES} (got {self.mode!r})")
        if self.mode == "open":
            require(self.rate_rps is not None and self.rate_rps > 0,
                    f"rate_rps must be positive for an open loop (got {self.rate_rps!r})")
        else:
            require(isinstance(self.users, int) and self.users >= 1, f"users must be at least 1 (got {self.users!r})")
            require(self.users >= self.workers, f"users ({self.users}) must be at least workers ({self.workers})")
        require(self.window_s > 0, f"window_s must be positive (got {self.window_s})")
        require(self.warmup_s >= 0, f"warmup_s must not be negative (got {self.warmup_s})")
        require(self.min_windows >= 1, f"min_windows must be at least 1 (got {self.min_windows})")
        require(self.max_windows >= self.min_windows,
                f"max_windows ({self.max_windows}) must be at least min_windows ({self.min_windows})")
        require(isinstance(self.workers, int) and self.workers >= 1, f"workers must be at least 1 (got {self.workers!r})")
        require(self.pacing >= 0, f"pacing must not be negative (got {self.pacing})")
        require(self.drain_s >= 0, f"drain_s must not be negative (got {self.drain_s})")
        if self.users_schedule is not None:
            require(self.mode == "closed", "a users_schedule needs a closed loop")
            require(self.users == self.users_schedule.peak_users,
                    f"users ({self.users}) must be the users_schedule's peak ({self.users_schedule.peak_users})")
            require(min(u for _, u in self.users_schedule.steps) >= self.workers,
                    f"every step of the users_schedule needs at least workers ({self.workers}) users")
        if self.rate_schedule is not None:
            require(self.mode == "open", "a rate_schedule needs an open loop")
            require(self.rate_rps == self.rate_schedule.peak_rps,
                    f"rate_rps ({self.rate_rps}) must be the rate_schedule's peak ({self.rate_schedule.peak_rps})")

    def as_record(self) -> dict[str, Any]:
        """What TrialRecord.load holds (only the fields that apply to the mode)."""
        data = asdict(self)
        for name in ("rate_schedule", "users_schedule"):
            schedule = getattr(self, name)
            if schedule is None:
                data.pop(name)
            else:
                data[name] = schedule.as_record()
        if self.mode == "open":
            data.pop("users")
            data.pop("pacing")
        else:
            data.pop("rate_rps")
        return data

    def planned_rate_rps(self, start_s: float, end_s: float) -> float | None:
        """The mean planned arrival rate over [start_s, end_s) of the measurement (open loop)."""
        if self.mode != "open":
            return None
        if self.rate_schedule is None:
            return self.rate_rps
        return self.rate_schedule.planned_rps(start_s, end_s)

    def share(self, worker: int) -> tuple[int, float | None]:
        """(users, rate) that worker ``worker`` of ``workers`` applies."""
        if self.mode == "open":
            return 0, (self.rate_rps or 0.0) / self.workers
        base, extra = divmod(self.users, self.workers)
        return base + (1 if worker < extra else 0), None
