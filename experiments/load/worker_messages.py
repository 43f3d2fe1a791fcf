"""The messages between the lab's load-generator processes and whatever coordinates them.

The lab's own workers (experiments/load/worker.py) talk to the trial process over a socket
with these pickled dataclasses. Locust's master and workers (distributed_recording.py) ship
the lab's part of each worker report in Locust's msgpack report data: ``WorkerReport``,
converted to plain data at the edge.


Kept apart from the worker module, which monkey-patches with gevent the moment it is imported.
A worker answers the pickled WorkerSpec with ``Ready``, then ``WindowClosed`` once per window,
and ``Finished`` after ``Stop``; ``Failed`` at any point ends it. The trial process sends
``Go`` once every worker is ready, then ``Stop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from poochlab.experiments.recording.windows import WindowData
from poochlab.experiments.records import CacheCounts, JsonValue


# worker -> trial
@dataclass(frozen=True)
class Ready:
    pid: int  # the worker's pid, for CPU placement and resource watching


@dataclass(frozen=True)
class WindowClosed:
    window: WindowData


@dataclass(frozen=True)
class Finished:
    """What a worker reports once its last window closed and its requests drained."""

    tail: WindowData | None  # answers that arrived after the last window closed
    outstanding: int  # requests still unanswered at the drain deadline (timeouts)
    cache: CacheCounts | None  # the cache's counts over the measurement; None without a cache
    expected_interval_us: int | None
    sender_greenlets: int
    sender_threads: int
    timer: str  # PreciseTimer kind


@dataclass(frozen=True)
class Failed:
    traceback: str


# trial -> worker
@dataclass(frozen=True)
class Go:
    start_at: float  # time.monotonic() when the load starts (warm-up first)
    measure_start: float  # time.monotonic() when the first measurement window opens


@dataclass(frozen=True)
class Stop:
    last_index: int  # the last window the trial keeps


FromWorker = Ready | WindowClosed | Finished | Failed
ToWorker = Go | Stop


# Locust worker -> master (distributed_recording.py), inside data[REPORT_KEY]
@dataclass(frozen=True)
class NameReport:
    """One request name's part of a worker report: its latencies and its failures by kind."""

    histogram: str  # hdrh encode() of the latencies, us
    errors_by_kind: dict[str, int]


@dataclass(frozen=True)
class WorkerReport:
    """The lab's part of one worker report (``data[REPORT_KEY]``): what it recorded in one window.

    Locust ships report data with msgpack, which carries plain data only, so on the wire it is
    the dict ``to_wire`` makes; ``from_wire`` checks it on the master's side.
    """

    since: float  # wall clock, seconds
    until: float
    warmup_excluded: int
    by_name: dict[str, NameReport]

    def to_wire(self) -> dict[str, JsonValue]:
        by_name: dict[str, JsonValue] = {
            name: {"histogram": part.histogram, "errors_by_kind": dict[str, JsonValue](part.errors_by_kind)}
            for name, part in self.by_name.items()}
        return {"since": self.since, "until": self.until, "warmup_excluded": self.warmup_excluded,
                "by_name": by_name}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "WorkerReport":
        """The report a worker sent; KeyError, TypeError, AttributeError or ValueError when malformed."""
        by_name = {str(name): NameReport(str(part["histogram"]),
                                         {str(k): int(v) for k, v in part["errors_by_kind"].items()})
                   for name, part in data["by_name"].items()}
        return cls(since=float(data.get("since", 0.0)), until=float(data.get("until", 0.0)),
                   warmup_excluded=int(data.get("warmup_excluded", 0)), by_name=by_name)
