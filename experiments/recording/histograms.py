"""HdrHistograms in microseconds with the lab's shared settings, and lossless merging.

Every recorder and reader builds its histograms here, so the range and precision
(``experiments.records.HDR_*``) can never differ between a worker and the process that
merges its windows. Percentiles of several workers or windows always come from merged
histograms (``decode_and_add``), never from averaged percentiles.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from hdrh.histogram import HdrHistogram

from poochlab.experiments.records import HDR_HIGHEST_US, HDR_LOWEST_US, HDR_SIGNIFICANT_FIGURES

# The percentiles the lab reports (LoadGen's set plus the maximum, which is reported apart).
REPORTED_PERCENTILES = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    """An empty histogram for microsecond values with the lab's range and precision."""
    return HdrHistogram(HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_FIGURES)


def clamp_us(value_us: float) -> int:
    """A latency as the integer the histogram can hold (sub-microsecond values count as 1 us)."""
    return min(max(int(round(value_us)), HDR_LOWEST_US), HDR_HIGHEST_US)


def encode(histogram: HdrHistogram) -> str:
    """The histogram as hdrh's compressed base64 text (what a Window stores)."""
    encoded = histogram.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else encoded


def decode(text: str) -> HdrHistogram:
    """A histogram back from :func:`encode`'s text; raises ValueError for text that is not one."""
    histogram = new_histogram()
    add_encoded(histogram, text)
    return histogram


def add_encoded(target: HdrHistogram, text: str) -> None:
    """Add an encoded histogram into ``target`` without losing a count."""
    if not text:
        return
    try:
        target.decode_and_add(text)
    except Exception as error:  # hdrh raises several types for bad payloads
        raise ValueError(f"not an encoded HdrHistogram ({type(error).__name__}: {error})") from None


def merge_encoded(texts: Iterable[str | None]) -> HdrHistogram:
    """One histogram holding every count of the given encoded histograms (None entries skipped)."""
    merged = new_histogram()
    for text in texts:
        if text:
            add_encoded(merged, text)
    return merged


def summarize(histogram: HdrHistogram) -> dict[str, float]:
    """Count, mean, the reported percentiles and the maximum, in microseconds."""
    count = histogram.get_total_count()
    summary: dict[str, float] = {"count": float(count)}
    if count == 0:
        return summary
    summary["mean_us"] = float(histogram.get_mean_value())
    for percentile in REPORTED_PERCENTILES:
        summary[f"p{percentile:g}_us"] = float(histogram.get_value_at_percentile(percentile))
    summary["max_us"] = float(histogram.get_max_value())
    return summary


def histogram_of(values_us: Iterable[float]) -> HdrHistogram:
    """A histogram of latencies given one by one (microseconds), e.g. a bench's own samples."""
    histogram = new_histogram()
    for value in values_us:
        histogram.record_value(clamp_us(value))
    return histogram


# value (us) -> its slot in the counts array, for histograms of the lab's settings (new_histogram).
_SLOT_OF_VALUE: dict[int, int] = {}
_SLOTS_KEPT = 1 << 16  # 23,552 slots hold every bucketed value up to an hour; this bounds unbucketed input


def record_counts(histogram: HdrHistogram, counts: Mapping[int, int]) -> None:
    """Add ``counts`` (integer value in us -> how many) to a histogram from :func:`new_histogram`,
    with the same result as ``record_value(value, count)`` for each pair.

    A window closes with ~1,000 distinct values per histogram and several histograms; hdrh's
    ``record_value`` spends ~4.5 us of Python finding each value's slot, so a window's close held the
    generator's event loop for ~5 ms, which sent the next requests late. Here each value's slot
    comes from hdrh once and is remembered: a close measured 4.5-6.5 ms before, 1.2-2.5 ms after."""
    if not counts:
        return
    if (histogram.lowest_trackable_value, histogram.highest_trackable_value,
            histogram.significant_figures) != (HDR_LOWEST_US, HDR_HIGHEST_US, HDR_SIGNIFICANT_FIGURES):
        for value, count in counts.items():  # other settings, other slots
            histogram.record_value(value, count)
        return
    slots = histogram.counts
    slot_of = _SLOT_OF_VALUE
    dropped: list[int] = []
    for value, count in counts.items():
        slot = slot_of.get(value)
        if slot is None:
            slot = _slot(histogram, value)
            if slot is None:
                dropped.append(value)  # out of range: record_value drops it too
                continue
        slots[slot] += count
    if dropped:
        counts = {value: count for value, count in counts.items() if value not in dropped}
    if counts:
        histogram.total_count += sum(counts.values())
        histogram.min_value = min(histogram.min_value, min(counts))
        histogram.max_value = max(histogram.max_value, max(counts))


def _slot(histogram: HdrHistogram, value: int) -> int | None:
    if value < 0:
        return None
    slot = histogram._counts_index_for(value)
    if slot < 0 or slot >= histogram.counts_len:
        return None
    if len(_SLOT_OF_VALUE) < _SLOTS_KEPT:
        _SLOT_OF_VALUE[value] = slot
    return slot


def histogram_of_counts(counts: Iterable[tuple[float, int]]) -> HdrHistogram:
    """A histogram of (latency in us, how many requests took it) pairs, e.g. wrk's own histogram."""
    histogram = new_histogram()
    for value, count in counts:
        if count:
            histogram.record_value(clamp_us(value), int(count))
    return histogram


def percentile_us(histogram: HdrHistogram, percentile: float) -> float | None:
    """The value at ``percentile`` (0-100] in microseconds, HdrHistogram's rule; None when empty.

    The lab's one way to read a percentile from requests: every bench and trial goes through
    here (or through ``summarize``), so a p50 means the same thing in every table.
    """
    if histogram.get_total_count() == 0:
        return None
    return float(histogram.get_value_at_percentile(percentile))
