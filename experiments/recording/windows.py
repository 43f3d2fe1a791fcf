"""Per-worker recording of one trial: every request's unrounded latency into per-window histograms.

One :class:`WindowRecorder` lives in each load-generator worker. A request belongs to the trial
when it was (scheduled to be) sent at or after the end of warm-up; it is counted in the window in
which its answer arrived. When a window's time is over the recorder closes it into a picklable
:class:`WindowData` (histograms as hdrh text) that the worker ships to the process that merges
all workers' windows. Errors are counted by kind, never mixed into the latency histograms.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from poochlab.experiments.recording.histograms import clamp_us, encode, new_histogram


@dataclass
class WindowData:
    """One closed window of one worker, ready to be sent to the merging process."""

    index: int
    requests: int
    errors_by_kind: dict[str, int]
    histogram: str
    corrected_histogram: str | None
    lateness_histogram: str | None
    server_queue_histogram: str | None
    server_compute_histogram: str | None
    client_timing_sums_us: dict[str, float]  # encode/wait/decode summed over `requests`
    answer_paths: dict[str, int]


@dataclass
class _OpenWindow:
    index: int
    latency: Any = field(default_factory=new_histogram)
    corrected: Any = field(default_factory=new_histogram)
    lateness: Any = field(default_factory=new_histogram)
    server_queue: Any = field(default_factory=new_histogram)
    server_compute: Any = field(default_factory=new_histogram)
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    timing_sums: Counter = field(default_factory=Counter)
    paths: Counter = field(default_factory=Counter)

    def close(self, corrected: bool, open_loop: bool) -> WindowData:
        def optional(histogram: Any) -> str | None:
            return encode(histogram) if histogram.get_total_count() else None

        return WindowData(
            index=self.index,
            requests=self.requests,
            errors_by_kind=dict(self.errors),
            histogram=encode(self.latency),
            corrected_histogram=encode(self.corrected) if corrected else None,
            lateness_histogram=encode(self.lateness) if open_loop else None,
            server_queue_histogram=optional(self.server_queue),
            server_compute_histogram=optional(self.server_compute),
            client_timing_sums_us={k: float(v) for k, v in self.timing_sums.items()},
            answer_paths=dict(self.paths),
        )


class WindowRecorder:
    """Records requests into windows of ``window_s`` seconds that start at ``measure_start``.

    Times are ``time.monotonic()`` seconds (the same clock in every process on Linux).
    ``expected_interval_us`` switches on the coordinated-omission-corrected twin histogram
    (closed loop); it may be set later, e.g. from the warm-up's median latency.
    """

    def __init__(self, measure_start: float, window_s: float, *, open_loop: bool,
                 expected_interval_us: int | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive (got {window_s})")
        self.measure_start = measure_start
        self.window_s = window_s
        self.open_loop = open_loop
        self.expected_interval_us = expected_interval_us
        self.correct = not open_loop
        self._current = _OpenWindow(index=0)
        self._closed: list[WindowData] = []
        # Warm-up latencies, kept only to estimate a closed loop's expected interval.
        self.warmup_latency = new_histogram()
        # Requests answered after the trial's last window, sent before its end (see stop_after).
        self._tail = _OpenWindow(index=-1)
        self._last_index: int | None = None
        self._crossers: dict[int, list[tuple[float, float, dict[str, Any]]]] = {}

    def window_index(self, when: float) -> int:
        return math.floor((when - self.measure_start) / self.window_s)

    def window_end(self, index: int) -> float:
        return self.measure_start + (index + 1) * self.window_s

    def record(self, start: float, end: float, *, error_kind: str | None = None,
               lateness_s: float | None = None, timing: Any = None, path: str | None = None) -> None:
        """One finished request: ``start`` is its scheduled (open loop) or actual send time."""
        details = {"error_kind": error_kind, "lateness_s": lateness_s, "timing": timing, "path": path}
        if start < self.measure_start:
            if error_kind is None:
                self.warmup_latency.record_value(clamp_us((end - start) * 1e6))
            return
        if self._last_index is not None:
            if start < self.window_end(self._last_index):
                self._put(self._tail, start, end, details)
            return
        self.advance(end)
        window = self._current
        self._put(window, start, end, details)
        if start < self.window_end(window.index - 1):
            # Sent in an earlier window: kept so the trial's end can claim it (see stop_after).
            self._crossers.setdefault(window.index, []).append((start, end, details))

    def _put(self, window: "_OpenWindow", start: float, end: float, details: dict[str, Any]) -> None:
        error_kind = details["error_kind"]
        if error_kind is not None:
            window.errors[error_kind] += 1
        else:
            window.requests += 1
            value = clamp_us((end - start) * 1e6)
            window.latency.record_value(value)
            if self.correct and self.expected_interval_us:
                window.corrected.record_corrected_value(value, self.expected_interval_us)
            elif self.correct:
                window.corrected.record_value(value)
            if details["timing"] is not None:
                _add_timing(window, details["timing"])
            if details["path"]:
                window.paths[details["path"]] += 1
        if details["lateness_s"] is not None:
            window.lateness.record_value(clamp_us(max(details["lateness_s"], 0.0) * 1e6))

    def advance(self, now: float) -> None:
        """Close every window whose time is over (call it from a timer, too: quiet windows close)."""
        if now < self.measure_start or self._last_index is not None:
            return
        while self.window_index(now) > self._current.index:
            self._closed.append(self._current.close(self.correct, self.open_loop))
            self._current = _OpenWindow(index=self._current.index + 1)
        for index in [i for i in self._crossers if i < self._current.index - 3]:
            del self._crossers[index]  # the trial never ends that far back

    def take_closed(self) -> list[WindowData]:
        """Windows closed since the last call, oldest first."""
        closed, self._closed = self._closed, []
        return closed

    def stop_after(self, last_index: int) -> None:
        """End the trial after window ``last_index``.

        Requests sent before that window's end but answered later (in flight at the end, or
        stalled) go into :meth:`tail`, which the merging process adds to the last window:
        leaving them out would flatter the high percentiles. Requests sent later are ignored.
        """
        self._last_index = last_index
        end = self.window_end(last_index)
        for index, crossers in self._crossers.items():
            if index > last_index:
                for start, finish, details in crossers:
                    if start < end:
                        self._put(self._tail, start, finish, details)
        self._crossers.clear()

    def tail(self) -> WindowData:
        """Answers that arrived after the last window closed, for requests sent before its end."""
        return self._tail.close(self.correct, self.open_loop)


def _add_timing(window: _OpenWindow, timing: Any) -> None:
    window.timing_sums["encode_us"] += timing.encode_us
    window.timing_sums["wait_us"] += timing.wait_us
    window.timing_sums["decode_us"] += timing.decode_us
    if getattr(timing, "server_queue_us", None) is not None:
        window.server_queue.record_value(clamp_us(timing.server_queue_us))
    if getattr(timing, "server_compute_us", None) is not None:
        window.server_compute.record_value(clamp_us(timing.server_compute_us))
