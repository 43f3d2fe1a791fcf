"""Confidence intervals for latency percentiles: a two-level block bootstrap.

Single requests are autocorrelated (a stall delays many in a row), so resampling them would give
intervals far too narrow. The blocks are measurement windows, and above them repetitions: each
resample draws repetitions with replacement, then windows with replacement within each drawn
repetition, merges the drawn windows' histograms and reads the percentile. With one repetition
only the window level varies, and the interval says nothing about run-to-run variation; the
caller reports that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poochlab.experiments.analysis.bucket_counts import bucket_values_us, row_percentiles_us

DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high


NO_INTERVAL = Interval(float("nan"), float("nan"))


def _compact(repetitions: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Keep only buckets some window hit: resamples then cost little memory."""
    stacked = np.vstack(repetitions)
    used = np.flatnonzero(stacked.sum(axis=0))
    return [rep[:, used] for rep in repetitions], bucket_values_us()[0][used]


def resample_percentiles(
    repetitions: list[np.ndarray],
    percentiles: tuple[float, ...],
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
) -> np.ndarray:
    """Bootstrap distribution of each percentile: array (resamples, len(percentiles)), us.

    ``repetitions`` holds one 2-D array per repetition: its windows' count vectors as rows.
    """
    repetitions = [rep for rep in repetitions if len(rep)]
    if not repetitions:
        return np.full((resamples, len(percentiles)), np.nan)
    compact, values = _compact(repetitions)
    width = compact[0].shape[1]
    merged = np.zeros((resamples, width), dtype=np.int64)
    drawn_reps = rng.integers(0, len(compact), size=(resamples, len(compact)))
    for slot in range(len(compact)):
        for rep_index, windows in enumerate(compact):
            rows = np.flatnonzero(drawn_reps[:, slot] == rep_index)
            if not len(rows):
                continue
            # A drawn repetition contributes as many window draws as it has windows: how often
            # each window is drawn is multinomial.
            n = len(windows)
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=len(rows))
            merged[rows] += weights @ windows
    return np.column_stack([row_percentiles_us(merged, p, values) for p in percentiles])


def percentile_intervals(
    repetitions: list[np.ndarray],
    percentiles: tuple[float, ...],
    seed: int,
    resamples: int = DEFAULT_RESAMPLES,
) -> list[Interval]:
    """95% percentile-bootstrap interval of each percentile, microseconds (seeded)."""
    windows = sum(len(rep) for rep in repetitions)
    if windows < 2:
        return [NO_INTERVAL for _ in percentiles]
    draws = resample_percentiles(repetitions, percentiles, np.random.default_rng(seed), resamples)
    return [_interval(draws[:, i]) for i in range(len(percentiles))]


def difference_intervals(
    repetitions_a: list[np.ndarray],
    repetitions_b: list[np.ndarray],
    percentiles: tuple[float, ...],
    seed: int,
    resamples: int = DEFAULT_RESAMPLES,
) -> list[Interval]:
    """95% interval of (B - A) for each percentile, resampling both sides independently (us)."""
    if sum(len(r) for r in repetitions_a) < 2 or sum(len(r) for r in repetitions_b) < 2:
        return [NO_INTERVAL for _ in percentiles]
    rng = np.random.default_rng(seed)
    draws_a = resample_percentiles(repetitions_a, percentiles, rng, resamples)
    draws_b = resample_percentiles(repetitions_b, percentiles, rng, resamples)
    return [_interval(draws_b[:, i] - draws_a[:, i]) for i in range(len(percentiles))]


def _interval(draws: np.ndarray) -> Interval:
    alpha = (1.0 - CONFIDENCE) / 2.0
    low, high = np.nanquantile(draws, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high))


def resample_rates(
    repetitions: list[tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
) -> np.ndarray:
    """Bootstrap distribution of an achieved rate (sum of counts / sum of durations), shape (resamples,).

    ``repetitions`` holds one (counts, durations) pair of 1-D arrays per repetition, one entry per
    window: the same two levels as :func:`resample_percentiles` (repetitions, then windows).
    """
    repetitions = [(c, d) for c, d in repetitions if len(c)]
    if not repetitions:
        return np.full(resamples, np.nan)
    counts = np.zeros(resamples)
    durations = np.zeros(resamples)
    drawn_reps = rng.integers(0, len(repetitions), size=(resamples, len(repetitions)))
    for slot in range(len(repetitions)):
        for rep_index, (rep_counts, rep_durations) in enumerate(repetitions):
            rows = np.flatnonzero(drawn_reps[:, slot] == rep_index)
            if not len(rows):
                continue
            n = len(rep_counts)
            weights = rng.multinomial(n, np.full(n, 1.0 / n), size=len(rows))
            counts[rows] += weights @ rep_counts
            durations[rows] += weights @ rep_durations
    return np.divide(counts, durations, out=np.full(resamples, np.nan), where=durations > 0)


def interval_of(draws: np.ndarray) -> Interval:
    """95% percentile interval of bootstrap draws; no interval when any draw is missing."""
    if not len(draws) or np.isnan(draws).any():
        return NO_INTERVAL
    return _interval(draws)
