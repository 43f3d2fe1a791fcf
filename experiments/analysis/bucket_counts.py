"""Latency histograms as count vectors: merge by adding, read percentiles like HdrHistogram.

Every window of a trial stores an ``hdrh`` histogram (microseconds) with the lab's shared
settings (``experiments.records``). Decoded into a fixed-length vector of bucket counts, merging
the windows of a trial, or the trials of a configuration, is a sum, and a bootstrap resample is a
weighted sum. Percentiles are read the way HdrHistogram reads them (the highest value equivalent
to the bucket that reaches the target count), so a percentile of merged windows equals the
percentile of all their requests within the histogram's 3 significant figures.
"""

from __future__ import annotations

from functools import lru_cache

from typing import Iterable

import numpy as np

from poochlab.experiments.recording.histograms import decode, new_histogram

# The percentiles every table reports (percent).
REPORTED_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)


@lru_cache(maxsize=1)
def bucket_values_us() -> tuple[np.ndarray, np.ndarray]:
    """(highest, median) equivalent value of every bucket index, microseconds."""
    histogram = new_histogram()
    lowest = np.array([histogram.get_value_from_index(i) for i in range(histogram.counts_len)], dtype=np.float64)
    highest = np.array([histogram.get_highest_equivalent_value(int(v)) for v in lowest], dtype=np.float64)
    median = lowest + np.floor((highest - lowest + 1) / 2)
    return highest, median


def decode_counts(encoded: str, source: str = "<histogram>") -> np.ndarray:
    """Decode one ``hdrh`` ``encode()`` text into a vector of bucket counts.

    Decoding goes through ``decode_and_add`` into a histogram with the lab's settings (the
    recorder's own :func:`decode`), so a histogram recorded with a narrower range still lands in
    the same buckets.
    """
    if not encoded:
        raise ValueError(f"{source}: not a valid hdrh histogram (empty text)")
    try:
        histogram = decode(encoded)
    except ValueError as error:
        raise ValueError(f"{source}: not a valid hdrh histogram ({error})") from None
    return np.ctypeslib.as_array(histogram.counts).astype(np.int64)


def add_counts(vectors: Iterable[np.ndarray]) -> np.ndarray:
    """The element-wise sum of count vectors (histograms merged); an empty histogram's counts
    when there are none."""
    total: np.ndarray | None = None
    for vector in vectors:
        total = vector if total is None else total + vector
    return empty_counts() if total is None else total


def empty_counts() -> np.ndarray:
    return np.zeros(len(bucket_values_us()[0]), dtype=np.int64)


def percentile_us(counts: np.ndarray, percentile: float, values: np.ndarray | None = None) -> float:
    """The value at ``percentile`` (0-100] of a count vector, microseconds; NaN when empty."""
    return float(row_percentiles_us(np.atleast_2d(np.asarray(counts)), percentile, values)[0])


def row_percentiles_us(rows: np.ndarray, percentile: float, values: np.ndarray | None = None) -> np.ndarray:
    """:func:`percentile_us` of each row of a 2-D array of count vectors, which is how the
    bootstrap reads all its resamples at once. ``values`` gives each column's bucket value when
    the vectors hold only some buckets (the bootstrap keeps only buckets that were ever hit).
    """
    totals = rows.sum(axis=1)
    # HdrHistogram's rule: the target count rounds half up and is at least 1.
    target = np.maximum(np.floor(min(percentile, 100.0) * totals / 100.0 + 0.5), 1)
    cumulative = np.cumsum(rows, axis=1)
    index = (cumulative < target[:, None]).sum(axis=1)
    highest = bucket_values_us()[0] if values is None else values
    return np.where(totals > 0, highest[np.minimum(index, len(highest) - 1)], np.nan)


def max_us(counts: np.ndarray) -> float:
    nonzero = np.flatnonzero(counts)
    if not len(nonzero):
        return float("nan")
    return float(bucket_values_us()[0][nonzero[-1]])


def mean_us(counts: np.ndarray) -> float:
    """Mean latency using each bucket's middle value, as HdrHistogram does."""
    total = counts.sum()
    if not total:
        return float("nan")
    return float((counts * bucket_values_us()[1]).sum() / total)


def summary_ms(counts: np.ndarray) -> dict[str, float]:
    """p50 ... p99.9, max and mean of a count vector, in milliseconds."""
    row = {percentile_column(p): percentile_us(counts, p) / 1000.0 for p in REPORTED_PERCENTILES}
    row["max_ms"] = max_us(counts) / 1000.0
    row["mean_ms"] = mean_us(counts) / 1000.0
    return row


def percentile_column(percentile: float) -> str:
    """Column name of a percentile: 99.9 -> ``p99.9_ms``, 50 -> ``p50_ms``."""
    return f"p{percentile:g}_ms"
