"""The stability rule against seeded synthetic windows: few false alarms, and a slower tail caught.

Windows are drawn from a lognormal body with a heavier Pareto tail and recorded into the lab's real
HdrHistograms. The true p99 of that distribution comes from its closed-form CDF (bisection), and a
"+25% p99" window is built by stretching the upper half of the distribution so that, by
construction, its true p99 is exactly 1.25 times the stationary one. Windows carry their slowest
answers' arrival times, as the lab records them (arrivals uniform over the window, as an open loop
at a steady rate sends them); stalls hold every request that arrives during one until it ends.
Nothing here is computed by the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from poochlab.experiments.recording.histograms import new_histogram
from poochlab.experiments.recording.stability import (MIN_DETECTING_REQUESTS, STABLE_WINDOWS, WindowSummary,
                                                      chi_square_sf, is_stable, judge)
from poochlab.experiments.recording.windows import SLOWEST_KEPT

# The latency distribution, microseconds: 97% lognormal around 4 ms, 3% Pareto (alpha 2.5) from 6 ms.
BODY_MEDIAN_US = 4000.0
BODY_SIGMA = 0.3
TAIL_WEIGHT = 0.03
TAIL_START_US = 6000.0
TAIL_ALPHA = 2.5
TRIALS = 200
SHIFT = 1.25


def _cdf(x: float) -> float:
    body = 0.5 * math.erfc(-(math.log(x / BODY_MEDIAN_US) / BODY_SIGMA) / math.sqrt(2))
    tail = 0.0 if x <= TAIL_START_US else 1.0 - (TAIL_START_US / x) ** TAIL_ALPHA
    return (1 - TAIL_WEIGHT) * body + TAIL_WEIGHT * tail


def _quantile(q: float) -> float:
    low, high = 1.0, 1e9
    for _ in range(200):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if _cdf(middle) < q else (low, middle)
    return math.sqrt(low * high)


MEDIAN_US = _quantile(0.5)
TRUE_P99_US = _quantile(0.99)
# Above the median, x -> median * (x/median)^gamma: monotone, so the true p99 becomes
# median * (p99/median)^gamma, which GAMMA makes exactly SHIFT * p99.
GAMMA = 1 + math.log(SHIFT) / math.log(TRUE_P99_US / MEDIAN_US)


def _draw(rng: np.random.Generator, n: int, shifted: bool = False) -> np.ndarray:
    body = BODY_MEDIAN_US * np.exp(BODY_SIGMA * rng.standard_normal(n))
    tail = TAIL_START_US * rng.random(n) ** (-1 / TAIL_ALPHA)
    values = np.where(rng.random(n) < TAIL_WEIGHT, tail, body)
    if shifted:
        upper = values > MEDIAN_US
        values[upper] = MEDIAN_US * (values[upper] / MEDIAN_US) ** GAMMA
    return values


def _bucket_indices(histogram, values: np.ndarray) -> np.ndarray:
    """hdrh's counts index for each integer value, vectorised (checked against hdrh below)."""
    values = values.astype(np.int64)
    _, exponent = np.frexp((values | histogram.sub_bucket_mask).astype(np.float64))  # = bit length
    bucket = exponent - histogram.unit_magnitude - (histogram.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values >> (bucket + histogram.unit_magnitude)
    return ((bucket + 1) << histogram.sub_bucket_half_count_magnitude) + sub_bucket - histogram.sub_bucket_half_count


def _histogram(values_us: np.ndarray):
    histogram = new_histogram()
    values = np.clip(np.rint(values_us), 1, 3_600_000_000).astype(np.int64)
    indices = _bucket_indices(histogram, values)
    counts = np.ctypeslib.as_array(histogram.counts)
    counts += np.bincount(indices, minlength=histogram.counts_len).astype(counts.dtype)
    histogram.set_internal_tacking_values(int(indices.min()), int(indices.max()), len(values))
    return histogram


def _slowest(histogram, latencies_us: np.ndarray, arrivals_s: np.ndarray) -> tuple[list[tuple[int, float]], int]:
    """The SLOWEST_KEPT slowest answers as (bucket's lowest value, arrival), and the value above
    which the list is complete, as a window records them."""
    order = np.argsort(latencies_us)[::-1][:SLOWEST_KEPT]
    kept = [(int(histogram.get_lowest_equivalent_value(int(np.clip(np.rint(latencies_us[i]), 1, None)))),
             float(arrivals_s[i] + latencies_us[i] / 1e6)) for i in order]
    complete_above = min(value for value, _ in kept) if len(latencies_us) > SLOWEST_KEPT else 0
    return kept, complete_above


def _window(rng: np.random.Generator, index: int, requests: int, duration_s: float = 2.0,
            shifted: bool = False, timed: bool = True, stalls_per_s: float = 0.0,
            stall_s: float = 0.08) -> WindowSummary:
    latencies = _draw(rng, requests, shifted)
    arrivals = index * duration_s + np.sort(rng.random(requests)) * duration_s
    for _ in range(rng.poisson(stalls_per_s * duration_s)):
        begin = index * duration_s + rng.random() * duration_s
        held = (arrivals >= begin) & (arrivals < begin + stall_s)
        latencies[held] += (begin + stall_s - arrivals[held]) * 1e6  # waits for the stall's end
    histogram = _histogram(latencies)
    if not timed:
        return WindowSummary(index, requests, duration_s, histogram)
    slowest, complete_above = _slowest(histogram, latencies, arrivals)
    return WindowSummary(index, requests, duration_s, histogram, slowest, complete_above)


def _alarm_rate(requests: int, shifted_last: int, seed: int, trials: int = TRIALS, poisson: bool = True,
                **window: float | bool) -> float:
    """Share of ``trials`` seeded runs of STABLE_WINDOWS windows judged not stable; the last
    ``shifted_last`` windows have a p99 25% higher. Window sizes are Poisson(requests) when asked
    (an open loop at a steady rate), else exactly ``requests``."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(trials):
        sizes = rng.poisson(requests, STABLE_WINDOWS) if poisson else [requests] * STABLE_WINDOWS
        windows = [_window(rng, i, int(n), shifted=i >= STABLE_WINDOWS - shifted_last, **window)  # type: ignore[arg-type]
                   for i, n in enumerate(sizes)]
        alarms += not judge(windows).stable
    return alarms / trials


def test_the_synthetic_distribution_is_what_it_claims() -> None:
    rng = np.random.default_rng(7)
    steady, shifted = _draw(rng, 2_000_000), _draw(rng, 2_000_000, shifted=True)
    assert np.quantile(steady, 0.99) == pytest.approx(TRUE_P99_US, rel=0.01)
    assert np.quantile(shifted, 0.99) == pytest.approx(SHIFT * TRUE_P99_US, rel=0.01)
    assert np.quantile(shifted, 0.5) == pytest.approx(MEDIAN_US, rel=0.01)  # only the upper half moves


def test_vectorised_recording_matches_hdrh() -> None:
    rng = np.random.default_rng(3)
    values = np.rint(_draw(rng, 5000)).astype(np.int64)
    reference = new_histogram()
    for value in values:
        reference.record_value(int(value))
    ours = _histogram(values)
    assert ours.get_total_count() == reference.get_total_count() == 5000
    for percentile in (50, 90, 99, 99.9, 100):
        assert ours.get_value_at_percentile(percentile) == reference.get_value_at_percentile(percentile)
    assert list(ours.counts) == list(reference.counts)


def test_chi_square_survival_matches_tabled_critical_values() -> None:
    # 5% and 1% critical values from standard chi-square tables.
    for df, critical_05, critical_01 in ((1, 3.841, 6.635), (2, 5.991, 9.210), (3, 7.815, 11.345),
                                         (4, 9.488, 13.277), (5, 11.070, 15.086)):
        assert chi_square_sf(critical_05, df) == pytest.approx(0.05, abs=5e-4)
        assert chi_square_sf(critical_01, df) == pytest.approx(0.01, abs=2e-4)
    assert chi_square_sf(0.0, 2) == 1.0
    assert chi_square_sf(14.2, 2) == pytest.approx(math.exp(-7.1))


# Stationary windows: the quick profile's 2 s windows from 300 to 4,000 req/s, and larger ones.
@pytest.mark.parametrize("requests", [600, 1000, 2500, MIN_DETECTING_REQUESTS, 8000])
def test_stationary_windows_rarely_raise_a_false_alarm(requests: int) -> None:
    assert _alarm_rate(requests, shifted_last=0, seed=requests) <= 0.10


@pytest.mark.parametrize("requests", [MIN_DETECTING_REQUESTS, 8000])
def test_a_quarter_slower_p99_in_the_last_window_is_caught(requests: int) -> None:
    assert _alarm_rate(requests, shifted_last=1, seed=requests + 1) >= 0.90


@pytest.mark.parametrize("requests", [6000, 8000])
def test_a_quarter_slower_p99_in_the_last_two_windows_is_caught(requests: int) -> None:
    assert _alarm_rate(requests, shifted_last=2, seed=requests + 2) >= 0.90


@pytest.mark.parametrize("requests", [1500, MIN_DETECTING_REQUESTS])
def test_a_steady_rhythm_of_stalls_is_stationary(requests: int) -> None:
    # One 80 ms stall every 2 s on average, in 3 s windows: counted per answer, the binomial test
    # calls most such trials unstable; counted as events, no more often than stationary windows.
    stalls = {"duration_s": 3.0, "stalls_per_s": 0.5}
    assert _alarm_rate(requests, shifted_last=0, seed=requests + 3, timed=False, **stalls) >= 0.30
    assert _alarm_rate(requests, shifted_last=0, seed=requests + 3, **stalls) <= 0.10


def test_answers_held_by_one_stall_count_as_one_event() -> None:
    rng = np.random.default_rng(14)
    calm = [_window(rng, i, 6000, duration_s=3.0) for i in range(2)]
    stalled = _window(rng, 2, 6000, duration_s=3.0)
    # 40 answers released together by one stall, slower than anything else in the windows
    arrivals = [2 * 3.0 + 1.0 + k * 0.0005 for k in range(40)]  # drained at 2,000/s
    slowest = sorted([*stalled.slowest[:-40], *((200_000, t + 0.2) for t in arrivals)], reverse=True)
    histogram = stalled.histogram
    for _ in arrivals:
        histogram.record_value(200_000)
    stalled = WindowSummary(2, 6040, 3.0, histogram, slowest, 0)
    verdict = judge([*calm, stalled])
    assert verdict.tail_counts[2] >= 40 + 1  # the stall's 40 answers and the window's own tail
    # ... of which the stall is one event; independent slow answers rarely merge (about 1 in 20)
    own = verdict.tail_counts[2] - 40
    assert 0.8 * own + 1 <= verdict.tail_events[2] <= own + 1
    assert verdict.statistic in ("tail-event chi-square", "poisson-dispersion chi-square")
    assert "events" in verdict.reason


def test_without_arrival_times_tail_answers_are_counted() -> None:
    rng = np.random.default_rng(15)
    verdict = judge([_window(rng, i, 8000, shifted=i == 2, timed=False) for i in range(3)])
    assert verdict.statistic == "tail-count chi-square" and verdict.tail_events == verdict.tail_counts


def test_one_window_of_a_thousand_requests_cannot_show_a_quarter_slower_p99() -> None:
    # Why windows must be longer: ~10 requests above the p99 cannot reveal a 25% shift.
    assert _alarm_rate(1000, shifted_last=1, seed=13) < 0.60


def test_a_not_stable_verdict_names_its_statistic() -> None:
    rng = np.random.default_rng(5)
    windows = [_window(rng, i, 8000, shifted=i == 2) for i in range(3)]
    verdict = judge(windows)
    assert not verdict.stable
    assert verdict.statistic == "tail-event chi-square" and verdict.df == 2
    assert verdict.tail_counts[2] > max(verdict.tail_counts[:2])  # the slow window holds the excess
    assert verdict.tail_events[2] > max(verdict.tail_events[:2])
    assert verdict.p_value < verdict.alpha
    assert "chi-square" in verdict.reason and "df 2" in verdict.reason and "pooled p99" in verdict.reason
    assert verdict.reason.startswith("not stable")


def test_throughput_far_apart_beyond_poisson_error_is_not_stable() -> None:
    rng = np.random.default_rng(6)
    windows = [_window(rng, 0, 5000), _window(rng, 1, 5000), _window(rng, 2, 4000)]  # 25% apart
    verdict = judge(windows)
    assert not verdict.stable
    assert verdict.statistic == "poisson-dispersion chi-square"
    assert verdict.throughput_spread == pytest.approx(0.25)
    assert "throughput" in verdict.reason and "chi-square" in verdict.reason


def test_a_throughput_spread_poisson_error_explains_is_stable() -> None:
    # 12% apart at ~300 requests a window: Poisson error alone (sd ~6%) explains it.
    rng = np.random.default_rng(8)
    windows = [_window(rng, 0, 300), _window(rng, 1, 318), _window(rng, 2, 336)]
    verdict = judge(windows)
    assert verdict.throughput_spread == pytest.approx(0.12)
    assert verdict.stable


def test_too_few_tail_samples_are_said_so_and_judged_on_throughput() -> None:
    rng = np.random.default_rng(9)
    windows = [_window(rng, i, 200) for i in range(3)]  # ~2 requests above a p99 per window
    verdict = judge(windows)
    assert verdict.stable and not verdict.tail_judged
    assert "p99 not judged" in verdict.reason


def test_too_few_windows_or_an_idle_window_is_not_stable() -> None:
    rng = np.random.default_rng(10)
    two = [_window(rng, 0, 1000), _window(rng, 1, 1000)]
    assert not is_stable(two)
    assert "2 windows measured" in judge(two).reason
    idle = [*two, WindowSummary(2, 0, 2.0, new_histogram())]
    assert not is_stable(idle)
    assert "window 2 answered no requests" in judge(idle).reason


def test_only_the_last_windows_are_judged() -> None:
    rng = np.random.default_rng(12)
    windows = [_window(rng, 0, 8000, shifted=True), *[_window(rng, i, 8000) for i in range(1, 4)]]
    verdict = judge(windows)
    assert verdict.windows == [1, 2, 3]
    assert verdict.stable


def test_what_a_p99_rests_on_counts_one_stall_once() -> None:
    from poochlab.experiments.analysis.report_document import _tail_support
    from poochlab.experiments.recording.stability import p99_support

    def window(index: int, slow_arrivals: list[float]) -> WindowSummary:
        histogram = new_histogram()
        histogram.record_value(1000, 990)
        histogram.record_value(50_000, 10)
        slowest = [(50_000, t) for t in slow_arrivals] + [(1000, index + 0.5)] * 990
        return WindowSummary(index, 1000, 1.0, histogram, sorted(slowest, reverse=True), 0)

    spread = window(0, [0.05 + 0.1 * k for k in range(10)])  # ten slow answers 100 ms apart
    stall = window(1, [1.5 + 0.0001 * k for k in range(10)])  # ten released by one stall
    support = p99_support([spread, stall])
    assert support["requests_above"] == 20 and support["events"] == 11
    untimed = p99_support([WindowSummary(0, 1000, 1.0, spread.histogram)])
    assert untimed["requests_above"] == 10 and untimed["events"] is None
    assert _tail_support(pd.Series({"p99_tail_requests": 40.0, "p99_tail_events": 3.0})) == "40 (3 events)"
    assert _tail_support(pd.Series({"p99_tail_requests": 40.0, "p99_tail_events": float("nan")})) == "40"
