"""Merging what the workers recorded: windows across workers, and a trial's windows into one result.

Counts are added and histograms merged with ``decode_and_add``; nothing is averaged.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from poochlab.experiments.recording.arms import add_arms
from poochlab.experiments.recording.histograms import encode, merge_encoded
from poochlab.experiments.recording.windows import WindowData


def merge_window_data(parts: Sequence[WindowData]) -> WindowData:
    """One window from the same window of every worker (or a window plus its tail)."""
    if not parts:
        raise ValueError("no window parts to merge")
    errors: Counter = Counter()
    sums: Counter = Counter()
    paths: Counter = Counter()
    cache: Counter = Counter()
    cache_errors: Counter = Counter()
    breaker: Counter = Counter()
    for part in parts:
        errors.update(part.errors_by_kind)
        sums.update(part.client_timing_sums_us)
        paths.update(part.answer_paths)
        cache.update(part.cache_counts)
        cache_errors.update(part.cache_errors_by_reason)
        breaker.update(part.breaker_counts)

    def merged(name: str) -> str | None:
        texts = [getattr(part, name) for part in parts]
        if all(text is None for text in texts):
            return None
        return encode(merge_encoded(texts))

    return WindowData(
        index=parts[0].index,
        requests=sum(part.requests for part in parts),
        errors_by_kind=dict(errors),
        histogram=merged("histogram") or "",
        corrected_histogram=merged("corrected_histogram"),
        lateness_histogram=merged("lateness_histogram"),
        server_queue_histogram=merged("server_queue_histogram"),
        server_compute_histogram=merged("server_compute_histogram"),
        client_timing_sums_us={k: float(v) for k, v in sums.items()},
        answer_paths=dict(paths),
        loop_lag_histogram=merged("loop_lag_histogram"),
        slowest=sorted((entry for part in parts for entry in part.slowest), reverse=True),
        slowest_complete_above_us=max(part.slowest_complete_above_us for part in parts),
        cache_counts=dict(cache),
        cache_errors_by_reason=dict(cache_errors),
        arms=add_arms(parts),
        refusal_histogram=merged("refusal_histogram"),
        breaker_counts=dict(breaker),
    )


def merged_histogram_text(texts: Iterable[str | None]) -> str | None:
    """Encoded merge of the given histograms, or None when none was given."""
    texts = [text for text in texts if text]
    return encode(merge_encoded(texts)) if texts else None
