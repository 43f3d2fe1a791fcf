"""The messages between the trial process and a load-generator worker (pickled over a socket).

Kept apart from the worker module, which monkey-patches with gevent the moment it is imported.
A worker answers the pickled WorkerSpec with ``Ready``, then ``WindowClosed`` once per window,
and ``Finished`` after ``Stop``; ``Failed`` at any point ends it. The trial process sends
``Go`` once every worker is ready, then ``Stop``.
"""

from __future__ import annotations

from dataclasses import dataclass

from poochlab.experiments.recording.windows import WindowData
from poochlab.experiments.records import CacheCounts


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
