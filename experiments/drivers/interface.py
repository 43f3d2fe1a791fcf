"""The load-driver interface: the load generator on one side, the system under test on the other.

In the spirit of MLPerf LoadGen, a driver knows how to send requests and time them, and nothing
about what a bench or a sweep does with the numbers; a bench knows what to start, what to
compare and what to print, and nothing about how a request is sent. They meet here:

- :class:`LoadDriver`: anything with ``run() -> LoadRun``, configured up front (target, load,
  duration) so that the same driver can be run again, or copied with another duration
  (``dataclasses.replace(driver, seconds=1)`` for a warm-up);
- :class:`LoadRun`: what every driver hands back, the same :class:`WindowData` a trial's worker
  ships (latencies as an HdrHistogram in microseconds, errors by kind, server timings when the
  driver reads them), plus the run's wall time and the driver's own CPU when it measures it.

Percentiles are read from the window's histogram (``recording/histograms.py``), never from a
tool's own rounded summary. Drivers: ``wrk.py`` (wrk, C, REST), ``grpc_loop.py`` (the bare
blocking gRPC loop), ``grpc_calls.py`` (raw grpcio calls in-process), ``locust_trial.py`` (the
lab's Locust workers, through ``measure_trial``), ``locust_command.py`` (Locust's own runner with
the lab's distributed recorder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from poochlab.experiments.recording.histograms import decode, encode, percentile_us
from poochlab.experiments.recording.windows import WindowData

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram


@dataclass
class LoadRun:
    """One run of one driver: its requests as one window, and how long it took."""

    window: WindowData
    wall_s: float
    cpu_s: float | None = None  # the driver's own CPU time (None: not measured)
    # What only some drivers have (the Locust driver's whole TrialRecord, for one).
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """Answered requests (their latencies are in the histogram)."""
        return self.window.requests

    @property
    def errors(self) -> int:
        return sum(self.window.errors_by_kind.values())

    @property
    def throughput(self) -> float:
        """Answered requests per second of wall time."""
        return self.requests / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self) -> "HdrHistogram":
        return decode(self.window.histogram)

    def percentile_us(self, percentile: float) -> float | None:
        """A latency percentile (microseconds) of the run's answered requests; None when none."""
        return percentile_us(self.latency(), percentile)

    def server_compute(self) -> "HdrHistogram | None":
        """The server's own compute durations (Server-Timing) when the driver read them."""
        text = self.window.server_compute_histogram
        return decode(text) if text else None


class LoadDriver(Protocol):
    """Drives load at one target for a duration fixed when it was made; returns what it measured."""

    def run(self) -> LoadRun: ...


def one_window(histogram: "HdrHistogram", requests: int, errors_by_kind: dict[str, int] | None = None,
               server_compute: "HdrHistogram | None" = None) -> WindowData:
    """A driver's whole run as the window a trial's worker would ship (index 0, nothing else known)."""
    return WindowData(index=0, requests=requests, errors_by_kind=dict(errors_by_kind or {}),
                      histogram=encode(histogram), corrected_histogram=None, lateness_histogram=None,
                      server_queue_histogram=None,
                      server_compute_histogram=encode(server_compute) if server_compute is not None else None,
                      client_timing_sums_us={}, answer_paths={})


class DriverError(RuntimeError):
    """A driver could not run or could not read its own result (the message says which and why)."""
