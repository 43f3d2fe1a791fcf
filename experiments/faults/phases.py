"""How a trial with faults went: which windows a fault touched, before / during / after, and
how long the system took to get back to where it was.

Pure functions of a record's windows (hdrh text, start_s, duration_s) and its fault timeline
(``FaultEvent.to_json()`` dicts, seconds since the measurement started):

- a fault *spans* from ``injected_at_s`` to ``cleared_at_s`` (a crash: kill to AVAILABLE
  again); a fault never cleared spans to the end of the trial; one never injected spans nothing;
- phases: *before* the first fault (windows that end by its injection), *during* (windows that
  overlap a span), *after* (every other window);
- the *pre-fault band*: a window is back to normal when its p99 is within
  ``BAND_P99_FACTOR`` times the merged p99 of the before windows and its availability is at
  most ``BAND_AVAILABILITY_POINTS`` percentage points below theirs;
- a fault's *recovery time*: from its end to the start of the first window that starts at or
  after its end and is within the band (to within one window: use short windows);
- *fault windows* (left out of the steady-state result and the stability rule): the windows
  that overlap a span, and those after it up to its recovery (all of them when it never recovered).

Availability is the share of attempts (answered + failed) answered successfully within the SLO
(the sweep's ``p99_budget_ms``, else the client's deadline).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from poochlab.experiments.recording.histograms import decode, merge_encoded

BAND_P99_FACTOR = 1.5
BAND_AVAILABILITY_POINTS = 1.0


@dataclass(frozen=True)
class Band:
    """The pre-fault band a window must be back in to count as recovered."""

    p99_us: float
    availability: float  # 0..1

    def holds(self, p99_us: float | None, availability: float | None) -> bool:
        if p99_us is None or availability is None:
            return False  # a window with no attempts says nothing about recovery
        return (p99_us <= BAND_P99_FACTOR * self.p99_us
                and availability >= self.availability - BAND_AVAILABILITY_POINTS / 100)


def spans(events: Sequence[dict[str, Any]], end_s: float) -> list[tuple[float, float]]:
    """Each injected fault's (start, end) in seconds since the measurement started."""
    result = []
    for event in events:
        if event.get("injected_at_s") is None:
            continue
        cleared = event.get("cleared_at_s")
        result.append((float(event["injected_at_s"]), float(cleared) if cleared is not None else end_s))
    return result


def overlaps(window: Any, span: tuple[float, float]) -> bool:
    start, end = window.start_s, window.start_s + window.duration_s
    low, high = span
    # A fault that lasted no time still touches the window it happened in.
    return start < max(high, low + 1e-9) and end > low


def _count_within(histogram: Any, limit_us: float) -> int:
    return sum(item.count_added_in_this_iter_step for item in histogram.get_recorded_iterator()
               if item.value_iterated_to <= limit_us)


def window_p99_us(window: Any) -> float | None:
    """A saved window's p99 in microseconds (None when it answered nothing)."""
    histogram = decode(window.histogram) if window.histogram else None
    return float(histogram.get_value_at_percentile(99)) if histogram and histogram.get_total_count() else None


def availability(windows: Iterable[Any], slo_us: float) -> float | None:
    """Answered within ``slo_us`` / attempts over ``windows`` (None: no attempts)."""
    windows = list(windows)
    attempts = sum(w.requests + w.errors for w in windows)
    if not attempts:
        return None
    within = _count_within(merge_encoded(w.histogram for w in windows), slo_us) if windows else 0
    return within / attempts


def phase_stats(windows: Sequence[Any], slo_us: float,
                errors_by_window: Mapping[int, Mapping[str, int]] | None = None) -> dict[str, Any]:
    merged = merge_encoded(w.histogram for w in windows)
    answered = sum(w.requests for w in windows)
    errors = sum(w.errors for w in windows)
    share = availability(windows, slo_us)
    stats = {"windows": [w.index for w in windows], "answered": answered, "errors": errors,
             "p99_ms": merged.get_value_at_percentile(99) / 1000 if merged.get_total_count() else None,
             "availability": share}
    if errors_by_window is not None:
        kinds: Counter = Counter()
        for window in windows:
            kinds.update(errors_by_window.get(window.index, {}))
        stats["errors_by_kind"] = dict(kinds)
    return stats


def pre_fault_band(before: Sequence[Any], slo_us: float) -> Band | None:
    merged = merge_encoded(w.histogram for w in before)
    share = availability(before, slo_us)
    if not merged.get_total_count() or share is None:
        return None
    return Band(float(merged.get_value_at_percentile(99)), share)


def summarize(windows: Sequence[Any], events: Sequence[dict[str, Any]], slo_ms: float,
              errors_by_window: Mapping[int, Mapping[str, int]] | None = None,
              ) -> tuple[dict[str, Any], set[int], list[dict[str, Any]]]:
    """The trial's fault summary, the indices of its fault windows, and ``events`` each with
    ``recovered_at_s`` and ``recovery_s`` added (None when it did not recover in the trial).
    With ``errors_by_window`` (window index -> error kind -> count) each phase also counts its
    errors by kind (``errors_by_kind``)."""
    slo_us = slo_ms * 1000
    end_s = max((w.start_s + w.duration_s for w in windows), default=0.0)
    fault_spans = spans(events, end_s)
    first = min((low for low, _ in fault_spans), default=None)
    before = [w for w in windows if first is None or w.start_s + w.duration_s <= first]
    during = [w for w in windows if any(overlaps(w, s) for s in fault_spans)]
    during_ids = {w.index for w in during}
    before_ids = {w.index for w in before}
    after = [w for w in windows if w.index not in before_ids | during_ids]
    band = pre_fault_band(before, slo_us) if fault_spans else None
    marked = set(during_ids)
    annotated = []
    starts = sorted(low for low, _ in fault_spans)
    for event in events:
        event = dict(event)
        event["recovered_at_s"] = event["recovery_s"] = None
        if event.get("injected_at_s") is not None and event.get("cleared_at_s") is not None:
            cleared = float(event["cleared_at_s"])
            # Recovery is looked for only until the next fault begins.
            horizon = min((s for s in starts if s > float(event["injected_at_s"])), default=end_s)
            recovered = None
            for window in windows:
                if window.start_s < cleared or window.start_s >= horizon:
                    continue
                if band is not None and band.holds(window_p99_us(window), availability([window], slo_us)):
                    recovered = window.start_s
                    break
            if recovered is not None:
                event["recovered_at_s"], event["recovery_s"] = recovered, recovered - cleared
            stop = recovered if recovered is not None else horizon
            marked |= {w.index for w in windows if cleared <= w.start_s < stop}
        elif event.get("injected_at_s") is not None:  # never cleared: everything after it is the fault
            marked |= {w.index for w in windows if w.start_s + w.duration_s > float(event["injected_at_s"])}
        annotated.append(event)
    recoveries = [e["recovery_s"] for e in annotated if e["recovery_s"] is not None]
    summary = {
        "slo_ms": slo_ms,
        "band": None if band is None else {"p99_ms": BAND_P99_FACTOR * band.p99_us / 1000,
                                           "availability": band.availability - BAND_AVAILABILITY_POINTS / 100,
                                           "rule": f"p99 <= {BAND_P99_FACTOR:g}x the pre-fault p99 and availability "
                                                   f">= the pre-fault one - {BAND_AVAILABILITY_POINTS:g} point"},
        "before": phase_stats(before, slo_us, errors_by_window), "during": phase_stats(during, slo_us, errors_by_window),
        "after": phase_stats(after, slo_us, errors_by_window),
        "fault_windows": sorted(marked),
        "recovery_s": max(recoveries) if recoveries and len(recoveries) == len(
            [e for e in annotated if e.get("cleared_at_s") is not None]) else None,
    }
    if band is None and fault_spans:
        summary["band_note"] = "no window ended before the first fault: no pre-fault band, no recovery time"
    return summary, marked, annotated
