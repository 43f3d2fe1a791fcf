"""Per-worker recording of one trial: every request's unrounded latency into per-window histograms.

One :class:`WindowRecorder` lives in each load-generator worker. A request belongs to the trial
when it was (scheduled to be) sent at or after the end of warm-up; it is counted in the window in
which its answer arrived. When a window's time is over the recorder closes it into a picklable
:class:`WindowData` (histograms as hdrh text) that the worker ships to the process that merges
all workers' windows. Errors are counted by kind, never mixed into the latency histograms.

The request path is kept cheap (it runs on the generator's one core): a latency is rounded down
to its HdrHistogram bucket (what a 3-significant-figure histogram stores anyway) and counted in a
dict; the hdrh histograms are built from those counts when the window closes. The
coordinated-omission correction is applied there too, to each bucket's value.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from poochlab.experiments.records import HDR_HIGHEST_US, HDR_SIGNIFICANT_FIGURES, CacheCounts
from poochlab.experiments.recording.histograms import encode, new_histogram, record_counts

# The slowest answers of a window kept with their arrival times, so the stability rule can tell
# one stall (many slow answers arriving together) from slow answers spread over the window. The
# pooled p99 of a window of n requests has about n/100 above it; 1,024 covers a 3 s window at
# 2,000 requests/s per worker with 17% of its answers slow (several stalls) before the list runs
# out, and then the rule counts answers instead, as it always did.
SLOWEST_KEPT = 1024

# Values below this are exact in a histogram of HDR_SIGNIFICANT_FIGURES figures; above it,
# the lowest `_BUCKET_BITS` significant bits are kept (hdrh's "lowest equivalent value").
_BUCKET_BITS = (2 * 10 ** HDR_SIGNIFICANT_FIGURES - 1).bit_length()
_EXACT_BELOW = 1 << _BUCKET_BITS


def bucket_us(seconds: float) -> int:
    """A duration in seconds as the lowest microsecond value of its HdrHistogram bucket."""
    value = int(seconds * 1e6 + 0.5)
    if value < _EXACT_BELOW:
        return value if value > 0 else 1
    if value > HDR_HIGHEST_US:
        value = HDR_HIGHEST_US
    shift = value.bit_length() - _BUCKET_BITS
    return (value >> shift) << shift


# The answers of a server that refuses rather than queues (--lab_max_queue, a full batching
# queue): their latencies are kept apart, to compare how fast refusals come back with answers.
SHED_KINDS = frozenset({"http_503", "grpc_UNAVAILABLE"})


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
    # how late the generator's 10 ms loop-lag timer fired in this window (us)
    loop_lag_histogram: str | None = None
    # the window's slowest answers: (latency bucket in us, arrival time in monotonic s), and the
    # latency above which the list holds every answer (0: it holds all of them)
    slowest: list[tuple[int, float]] = field(default_factory=list)
    slowest_complete_above_us: int = 0
    # What the cache counted while this window was open: {"hits", "misses"}, and errors by
    # reason ("connection", "timeout", "garbage", ...); empty without a cache.
    cache_counts: dict[str, int] = field(default_factory=dict)
    cache_errors_by_reason: dict[str, int] = field(default_factory=dict)
    # A/B test: per arm {"histogram" (hdrh text), "requests", "errors", and the quality sums
    # of recording/arms.py: "scored", "abs_error", "likes", "predicted", "excluded"}.
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # how fast refusals came back (SHED_KINDS: a full queue answers at once), us
    refusal_histogram: str | None = None
    # the fallback's circuit breaker in this window: {"opened", "probes", "closed"} transitions;
    # empty without a fallback
    breaker_counts: dict[str, int] = field(default_factory=dict)


def _put_arm(window: _OpenWindow, arm: str, start: float, end: float, error_kind: str | None,
             quality: tuple[int, float, float, float, int] | None) -> None:
    counts = window.arm_counts.get(arm)
    if counts is None:
        counts = window.arm_counts[arm] = {"requests": 0, "errors": 0, "scored": 0, "abs_error": 0.0,
                                           "likes": 0.0, "predicted": 0.0, "excluded": 0}
    if error_kind is not None:
        counts["errors"] += 1
        return
    counts["requests"] += 1
    latency = window.arm_latency.setdefault(arm, {})
    value = bucket_us(end - start)
    latency[value] = latency.get(value, 0) + 1
    if quality is not None:
        scored, abs_error, likes, predicted, excluded = quality
        counts["scored"] += scored
        counts["abs_error"] += abs_error
        counts["likes"] += likes
        counts["predicted"] += predicted
        counts["excluded"] += excluded


def counts_histogram(counts: dict[int, int], expected_interval_us: int | None = None) -> Any:
    """A histogram of bucketed counts (value in us -> count), corrected for coordinated
    omission with ``expected_interval_us`` when it is given."""
    histogram = new_histogram()
    if not expected_interval_us:
        record_counts(histogram, counts)
        return histogram
    for value, count in counts.items():
        histogram.record_corrected_value(value, expected_interval_us, count)
    return histogram


def histogram_text(counts: dict[int, int], expected_interval_us: int | None = None) -> str:
    """:func:`counts_histogram`, encoded (HdrHistogram's compressed text)."""
    return encode(counts_histogram(counts, expected_interval_us))


@dataclass
class _OpenWindow:
    index: int
    latency: dict[int, int] = field(default_factory=dict)
    lateness: dict[int, int] = field(default_factory=dict)
    server_queue: dict[int, int] = field(default_factory=dict)
    server_compute: dict[int, int] = field(default_factory=dict)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    encode_us: float = 0.0
    wait_us: float = 0.0
    decode_us: float = 0.0
    paths: dict[str, int] = field(default_factory=dict)
    loop_lag: dict[int, int] = field(default_factory=dict)
    slowest: list[tuple[int, float]] = field(default_factory=list)  # a min-heap of SLOWEST_KEPT
    arm_latency: dict[str, dict[int, int]] = field(default_factory=dict)
    arm_counts: dict[str, dict[str, float]] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)

    def close(self, corrected: bool, open_loop: bool, expected_interval_us: int | None) -> WindowData:
        return WindowData(
            index=self.index,
            requests=self.requests,
            errors_by_kind=dict(self.errors),
            histogram=histogram_text(self.latency),
            corrected_histogram=histogram_text(self.latency, expected_interval_us) if corrected else None,
            lateness_histogram=histogram_text(self.lateness) if open_loop else None,
            server_queue_histogram=histogram_text(self.server_queue) if self.server_queue else None,
            server_compute_histogram=histogram_text(self.server_compute) if self.server_compute else None,
            client_timing_sums_us={"encode_us": self.encode_us, "wait_us": self.wait_us,
                                   "decode_us": self.decode_us} if self.requests else {},
            answer_paths=dict(self.paths),
            loop_lag_histogram=histogram_text(self.loop_lag) if self.loop_lag else None,
            slowest=sorted(self.slowest, reverse=True),
            slowest_complete_above_us=self.slowest[0][0] if len(self.slowest) >= SLOWEST_KEPT else 0,
            arms={arm: {**counts, "histogram": histogram_text(self.arm_latency.get(arm, {}))}
                  for arm, counts in self.arm_counts.items()},
            refusal_histogram=histogram_text(self.refused) if self.refused else None,
        )


class WindowRecorder:
    """Records requests into windows of ``window_s`` seconds that start at ``measure_start``.

    Times are ``time.monotonic()`` seconds (the same clock in every process on Linux).
    For a closed loop the corrected twin histogram is built with ``expected_interval_us``
    (HdrHistogram's ``record_corrected_value``); when it is not known it is taken from the
    warm-up's median latency, or else from the first window's.
    """

    def __init__(self, measure_start: float, window_s: float, *, open_loop: bool,
                 expected_interval_us: int | None = None,
                 cache_probe: Callable[[], CacheCounts] | None = None,
                 breaker_probe: Callable[[], dict[str, int]] | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive (got {window_s})")
        self.measure_start = measure_start
        self.window_s = window_s
        self.open_loop = open_loop
        self.expected_interval_us = expected_interval_us
        self.correct = not open_loop
        self._current = _OpenWindow(index=0)
        self._current_end = self.window_end(0)
        self._closed: list[WindowData] = []
        # Warm-up latencies (bucketed counts, like a window's), kept only to estimate a closed
        # loop's expected interval; a histogram is built only if someone asks.
        self._warmup_counts: dict[int, int] = {}
        # Requests answered after the trial's last window, sent before its end (see stop_after).
        self._tail = _OpenWindow(index=-1)
        self._last_index: int | None = None
        self._crossers: dict[int, list[tuple[float, float, tuple]]] = {}
        # The cache's running counts ({"hits", "misses", "errors_by_reason"}), read when a window
        # closes: the difference to the last reading is that window's (see _client_counts).
        self.cache_probe = cache_probe
        self.breaker_probe = breaker_probe  # the breaker's transition counts, read the same way
        self._breaker_seen: dict[str, int] = {}
        self._cache_seen: CacheCounts | None = None

    @property
    def warmup_latency(self) -> Any:
        return counts_histogram(self._warmup_counts)

    def window_index(self, when: float) -> int:
        return math.floor((when - self.measure_start) / self.window_s)

    def window_end(self, index: int) -> float:
        return self.measure_start + (index + 1) * self.window_s

    def record(self, start: float, end: float, error_kind: str | None = None,
               lateness_s: float | None = None, timing: Any = None, path: str | None = None,
               arm: str | None = None, quality: tuple[int, float, float, float, int] | None = None) -> None:
        """One finished request: ``start`` is its scheduled (open loop) or actual send time.

        Called for every request on the generator's own loop: plain dict counting only, the
        histograms are built once per window (``advance``)."""
        if start < self.measure_start:
            if error_kind is None:
                value = bucket_us(end - start)
                self._warmup_counts[value] = self._warmup_counts.get(value, 0) + 1
            return
        details = (error_kind, lateness_s, timing, path, arm, quality)
        if self._last_index is not None:
            if start < self.window_end(self._last_index):
                self._put(self._tail, start, end, details)
            return
        if end >= self._current_end:
            self.advance(end)
        window = self._current
        self._put(window, start, end, details)
        if start < self._current_end - self.window_s:
            # Sent in an earlier window: kept so the trial's end can claim it (see stop_after).
            self._crossers.setdefault(window.index, []).append((start, end, details))

    def record_loop_lag(self, due: float, late_s: float) -> None:
        """One firing of the generator's loop-lag timer, due at ``due``, ``late_s`` late: kept
        per window, so a trial's verdict judges the lag of the windows it keeps."""
        if due < self.measure_start or self._last_index is not None:
            return
        fired = due + max(late_s, 0.0)
        if fired >= self._current_end:
            self.advance(fired)
        value = bucket_us(late_s) if late_s > 0 else 1
        self._current.loop_lag[value] = self._current.loop_lag.get(value, 0) + 1

    def count(self, start: float, end: float) -> None:
        """Count an answer without recording it (only to measure what recording costs)."""
        if start >= self.measure_start and self._last_index is None:
            if end >= self._current_end:
                self.advance(end)
            self._current.requests += 1

    @staticmethod
    def _put(window: _OpenWindow, start: float, end: float, details: tuple) -> None:
        error_kind, lateness_s, timing, path, arm, quality = details
        if arm is not None:
            _put_arm(window, arm, start, end, error_kind, quality)
        if error_kind is not None:
            window.errors[error_kind] = window.errors.get(error_kind, 0) + 1
            if error_kind in SHED_KINDS:
                value = bucket_us(end - start)
                window.refused[value] = window.refused.get(value, 0) + 1
        else:
            window.requests += 1
            value = bucket_us(end - start)
            counts = window.latency
            counts[value] = counts.get(value, 0) + 1
            slowest = window.slowest
            if len(slowest) < SLOWEST_KEPT:
                heapq.heappush(slowest, (value, end))
            elif value > slowest[0][0]:
                # Only strictly slower answers enter a full list: everything above its least
                # value is then in it (slowest_complete_above_us).
                heapq.heapreplace(slowest, (value, end))
            if timing is not None:
                window.encode_us += timing.encode_us
                window.wait_us += timing.wait_us
                window.decode_us += timing.decode_us
                if timing.server_queue_us is not None:
                    value = bucket_us(timing.server_queue_us / 1e6)
                    window.server_queue[value] = window.server_queue.get(value, 0) + 1
                if timing.server_compute_us is not None:
                    value = bucket_us(timing.server_compute_us / 1e6)
                    window.server_compute[value] = window.server_compute.get(value, 0) + 1
            if path:
                window.paths[path] = window.paths.get(path, 0) + 1
        if lateness_s is not None:
            value = bucket_us(lateness_s) if lateness_s > 0 else 1
            window.lateness[value] = window.lateness.get(value, 0) + 1

    def _interval(self, window: _OpenWindow) -> int | None:
        if self.expected_interval_us is None and self.correct and window.latency:
            # No pacing and no warm-up: the first window's median stands for the expected interval.
            self.expected_interval_us = int(counts_histogram(window.latency).get_value_at_percentile(50))
        return self.expected_interval_us

    def advance(self, now: float) -> None:
        """Close every window whose time is over (call it from a timer, too: quiet windows close)."""
        if now < self.measure_start or self._last_index is not None:
            return
        while now >= self._current_end:
            window = self._current
            closed = window.close(self.correct, self.open_loop, self._interval(window))
            self._client_counts(closed)
            self._closed.append(closed)
            self._current = _OpenWindow(index=window.index + 1)
            self._current_end = self.window_end(self._current.index)
        for index in [i for i in self._crossers if i < self._current.index - 3]:
            del self._crossers[index]  # the trial never ends that far back

    def _client_counts(self, closed: WindowData) -> None:
        # Counted when the window closes, so a window holds what the cache and the breaker
        # counted while it was open (give or take the request in progress when it closed).
        if self.breaker_probe is not None:
            counts = self.breaker_probe()
            closed.breaker_counts = {k: n - self._breaker_seen.get(k, 0) for k, n in counts.items()}
            self._breaker_seen = counts
        if self.cache_probe is None:
            return
        now = self.cache_probe()
        counted = now.since(self._cache_seen) if self._cache_seen is not None else now
        self._cache_seen = now
        closed.cache_counts = {"hits": counted.hits, "misses": counted.misses}
        closed.cache_errors_by_reason = {r: n for r, n in (counted.errors_by_reason or {}).items() if n}

    def start_client_counts(self) -> None:
        """Read the cache's and breaker's counts at the measurement's start (warm-up and prefill
        are left out)."""
        if self.cache_probe is not None:
            self._cache_seen = self.cache_probe()
        if self.breaker_probe is not None:
            self._breaker_seen = self.breaker_probe()

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
        return self._tail.close(self.correct, self.open_loop, self.expected_interval_us)
