"""When a measurement is stable: the last windows agree within their own sampling error.

perf_analyzer calls a load level stable when the last 3 windows' throughput and p99 agree within
10% (max/min). A 2 s window of a few thousand requests holds only 25-80 requests above its p99, and
sampling error alone moves such a p99 by more than 10%, so that rule flagged most stationary trials.
This rule judges the last ``STABLE_WINDOWS`` windows against their sampling error instead:

Tail (the p99). Pool the windows' histograms, take the pooled p99, and count in each window the
requests strictly slower than the pooled p99's HdrHistogram bucket. If nothing changed, each
window's count is binomial with the same share, so the counts must pass a binomial homogeneity test
(the 2 x k chi-square test; Mood's median test with the p99 in place of the median). This is the
reasoning of LoadGen's early stopping, which also treats the count of queries over a bound as
binomial. A slower tail in one window shows up as that window holding far too many of them.
- Discreteness: every value in the pooled p99's bucket counts as "not above", so the share above is
  at most 1% and not exactly 1%; the test's expected share is the pooled share, never 1%.
- Too few tail samples: the chi-square approximation needs about ``MIN_EXPECTED_TAIL`` (5) expected
  counts per window. With fewer (under ~500 requests per window) the tail cannot be judged at all:
  the verdict rests on throughput alone and its reason says the p99 was not judged. Calling such
  trials unstable would only repeat the old meaningless warning, since more windows of the same
  size would never hold more tail samples.

Stalls. Requests are not independent when the system stalls: a pause of 80 ms at 500 requests/s
sends 40 answers above the p99 at once, and a binomial test counts each as independent evidence, so
a steady rhythm of short stalls (a stationary process) reads as "the windows differ" almost every
time. The rule therefore counts tail events, not tail answers, when the windows carry the arrival
times of their slowest answers (recording/windows.py keeps them): answers above the pooled p99 that
arrive within ``TAIL_EVENT_GAPS`` mean gaps between answers (at most ``STALL_GAP_S``) of the
previous one belong to the same event (runs declustering, as
extreme-value statistics treats clustered exceedances). Independent slow answers rarely arrive that
close (about one in twenty), so a slower tail still shows as more events; a
window holding one more stall shows as one more event, not forty. The verdict keeps both counts,
and a p99 that rests on few events is fragile whatever the rule says: the report shows them.

Throughput. An open loop at a Poisson rate has sampling error too (a window's count varies by
sqrt(n)), and a 10% max/min can happen by chance at a few hundred requests a window. Throughput
differs only when the spread is both larger than ``THROUGHPUT_TOLERANCE`` (10%, the size that
matters) and more than Poisson sampling explains (a Poisson dispersion chi-square on the counts,
given each window's duration, rejects at ``THROUGHPUT_ALPHA``). Closed loops vary less than Poisson, so for them
the test is conservative. A window that answered nothing is never stable.

Choices, measured with seeded synthetic windows (tests/test_recording_stability.py: a lognormal body
with a heavier Pareto tail recorded into real HdrHistograms, arrivals spread over 2 s windows;
400 seeded trials per cell, Poisson window sizes; "+25%" stretches the upper half so the window's
true p99 is 1.25x; "stalls": 3 s windows with an 80 ms stall every 2 s on average, counted as
events and, for comparison, answer by answer):

    requests/window   false alarms   +25% p99 in last window   in last 2 windows   stalls: events / answers
               600          2.8%              21%                      11%               1.0% / 67%
             1,000          4.0%              33%                      22%               0.8% / 69%
             1,500          3.5%              48%                      37%               0.2% / 78%
             2,500          4.0%              76%                      55%               0.5% / 88%
             3,500          3.8%              88%                      69%               1.2% / 88%
             4,000          1.8%              90%                      78%               1.5% / 93%
             5,000          2.2%              96%                      85%               0.5% / 90%
             6,000          3.0%              98%                      94%               1.5% / 91%
             8,000          2.2%             100%                      98%               1.2% / 92%

Counting events costs a little power (independent slow answers merge now and then, a slower tail's
more often): one-window detection at 4,000 requests fell from 96% to 90%, so the smallest window
that detects 9 times in 10 is now 5,000 (the quick profile's ``window_requests``).
- 3 windows, as before: with a drift in the last window, more windows add degrees of freedom about
  as fast as they sharpen the baseline, and 3 keeps the quick profile (3-4 windows) working.
- ``ALPHA`` = 0.05 over both tests, split Bonferroni-style: 0.04 for the tail, 0.01 for throughput
  (which needs a 10% spread as well, so it rarely fires at all above ~2,000 requests a window).
  With 0.05 each, false alarms reached 11% at 600 requests a window (the chi-square runs slightly
  hot with 6 expected tail counts, and Poisson error alone makes 10% throughput spreads there).
- Power is set by the tail count, not the request count: a window of n requests holds n/100 above
  the p99, and a +25% p99 raises that share to 2.1% here (less for heavier tails). A one-window
  shift is caught 90% of the time only from ``MIN_DETECTING_REQUESTS`` (5,000) requests a window, and
  a shift spanning the last 2 of 3 windows from about 6,000. Below that this rule cannot meet both
  targets (at most 10% false alarms, at least 90% detection), and no rule could by much: too few
  requests sit above the p99 to tell a 25% shift from chance.
  As windows arrive the rule runs after each one, so a lasting step is first judged when it covers
  only the last window, where it is easiest to see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

STABLE_WINDOWS = 3
ALPHA = 0.05  # false alarms over both tests (Bonferroni: split below)
TAIL_ALPHA = 0.04
THROUGHPUT_ALPHA = ALPHA - TAIL_ALPHA
TAIL_PERCENTILE = 99.0
MIN_EXPECTED_TAIL = 5.0  # expected requests above the pooled p99 per window for the chi-square to hold
THROUGHPUT_TOLERANCE = 0.10
MIN_DETECTING_REQUESTS = 5000  # smallest window (requests) at which a +25% p99 shift is caught >= 90%
# Slow answers arriving closer than this to the previous one are one tail event: 2 mean gaps
# between answers, at least 2 ms (a stall's backlog leaves with some jitter) and at most 10 ms.
# Independent slow answers (1% of all) then merge 2-5% of the time, while a stall's backlog,
# released faster than requests arrive, merges.
TAIL_EVENT_GAPS = 2.0
MIN_EVENT_GAP_S = 0.002
STALL_GAP_S = 0.010


@dataclass(frozen=True)
class WindowSummary:
    """One measurement window as the rule needs it: answers, length and their latencies (us)."""
    index: int
    requests: int
    duration_s: float
    histogram: HdrHistogram
    # The window's slowest answers, (latency bucket us, arrival s), holding every answer slower
    # than ``slowest_complete_above_us``; None when not recorded (tail answers are then counted).
    slowest: Sequence[tuple[int, float]] | None = None
    slowest_complete_above_us: int = 0

    @property
    def throughput_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def p99_us(self) -> float:
        if self.histogram.get_total_count() == 0:
            return 0.0
        return float(self.histogram.get_value_at_percentile(TAIL_PERCENTILE))


@dataclass(frozen=True)
class StabilityVerdict:
    """The rule's answer for the last windows, with the numbers behind it."""
    stable: bool
    windows: list[int]  # indices judged (the ones merged into the result when stable)
    statistic: str  # name of the test that decided (or "none" when nothing could be tested)
    value: float  # its value
    p_value: float  # its p-value (nan when not computed)
    alpha: float  # the significance level it was compared with
    df: int  # its degrees of freedom
    throughput_spread: float  # max/min - 1 of the windows' throughputs (inf when one is zero)
    tail_threshold_us: float  # the pooled p99 (the upper edge of its bucket); 0 when not computed
    tail_counts: list[int]  # requests above it, per judged window
    tail_events: list[int]  # those requests as events (arrivals within STALL_GAP_S merged), per window
    tail_judged: bool  # False when the windows held too few tail samples to test the p99
    reason: str  # one line for people: what was decided and by which statistic


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with integer ``df`` degrees of freedom (closed form)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1 (got {df})")
    if x <= 0:
        return 1.0
    half = x / 2.0
    if df % 2 == 0:  # exp(-x/2) * sum_{k < df/2} (x/2)^k / k!
        term = total = 1.0
        for k in range(1, df // 2):
            term *= half / k
            total += term
        return min(1.0, math.exp(-half) * total)
    # odd df: erfc(sqrt(x/2)) + exp(-x/2) * sum_{k=1}^{(df-1)/2} (x/2)^(k-1/2) / Gamma(k+1/2)
    total = math.erfc(math.sqrt(half))
    term = math.sqrt(half) / math.gamma(1.5)
    for k in range(1, (df - 1) // 2 + 1):
        total += math.exp(-half) * term
        term *= half / (k + 0.5)
    return min(1.0, total)


def _counts(histogram: HdrHistogram) -> np.ndarray:
    return np.ctypeslib.as_array(histogram.counts)[:histogram.counts_len].astype(np.int64)


def tail_counts(histograms: Sequence[HdrHistogram],
                percentile: float = TAIL_PERCENTILE) -> tuple[float, list[int], list[int]]:
    """(pooled percentile's bucket upper edge in us, per-window counts strictly above that bucket,
    per-window totals). The pooled percentile follows hdrh's own definition exactly."""
    first = histograms[0]
    layout = (first.counts_len, first.sub_bucket_count, first.unit_magnitude)
    for histogram in histograms[1:]:
        if (histogram.counts_len, histogram.sub_bucket_count, histogram.unit_magnitude) != layout:
            raise ValueError("window histograms have different ranges or precision; build them with "
                             "poochlab.experiments.recording.histograms.new_histogram")
    cumulative = np.cumsum(np.stack([_counts(h) for h in histograms]), axis=1)
    totals = cumulative[:, -1]
    pooled = cumulative.sum(axis=0)
    total = int(pooled[-1])
    if total == 0:
        return 0.0, [0] * len(histograms), [0] * len(histograms)
    target = max(int(percentile * total / 100 + 0.5), 1)  # hdrh's get_target_count_at_percentile
    index = int(np.searchsorted(pooled, target, side="left"))
    threshold = first.get_highest_equivalent_value(first.get_value_from_index(index))
    above = totals - cumulative[:, index]
    return float(threshold), [int(a) for a in above], [int(t) for t in totals]


def tail_events(window: WindowSummary, threshold_us: float, above: int, gap_s: float) -> int:
    """How many events the window's ``above`` answers slower than ``threshold_us`` form: runs of
    answers arriving within ``gap_s`` of each other count once. ``above`` itself when the window
    did not keep the arrival times of all of them."""
    if window.slowest is None or threshold_us < window.slowest_complete_above_us:
        return above
    arrivals = sorted(arrival for latency_us, arrival in window.slowest if latency_us > threshold_us)
    if len(arrivals) != above:  # the list and the histogram disagree: trust the histogram
        return above
    events, previous = 0, -math.inf
    for arrival in arrivals:
        if arrival - previous > gap_s:
            events += 1
        previous = arrival
    return events


def event_gap_s(answers: int, duration_s: float) -> float:
    """How close slow answers must arrive to count as one event, at ``answers`` in ``duration_s``."""
    if answers <= 0 or duration_s <= 0:
        return STALL_GAP_S
    return min(STALL_GAP_S, max(MIN_EVENT_GAP_S, TAIL_EVENT_GAPS * duration_s / answers))


def p99_support(windows: Sequence[WindowSummary]) -> dict[str, float | int | None]:
    """What the pooled p99 of ``windows`` rests on: the requests above it and the tail events they
    form (None when the windows did not keep their slowest answers' arrival times)."""
    if not windows or sum(w.requests for w in windows) == 0:
        return {"threshold_us": 0.0, "requests_above": 0, "events": None}
    threshold, above, totals = tail_counts([w.histogram for w in windows])
    timed = all(w.slowest is not None for w in windows)
    gap_s = event_gap_s(sum(totals), sum(w.duration_s for w in windows))
    events = sum(tail_events(w, threshold, a, gap_s) for w, a in zip(windows, above)) if timed else None
    return {"threshold_us": threshold, "requests_above": sum(above), "events": events}


def _throughput(last: Sequence[WindowSummary], alpha: float) -> tuple[float, float, float, bool]:
    """(spread, dispersion chi-square, p-value, differs)."""
    rates = [w.throughput_rps for w in last]
    spread = max(rates) / min(rates) - 1.0
    counts = np.array([w.requests for w in last], dtype=float)
    durations = np.array([w.duration_s for w in last], dtype=float)
    expected = counts.sum() * durations / durations.sum()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    p_value = chi_square_sf(statistic, len(last) - 1)
    return spread, statistic, p_value, spread > THROUGHPUT_TOLERANCE and p_value < alpha


def judge(windows: Sequence[WindowSummary], count: int = STABLE_WINDOWS, tail_alpha: float = TAIL_ALPHA,
          throughput_alpha: float = THROUGHPUT_ALPHA) -> StabilityVerdict:
    """Judge the last ``count`` windows (call again as each window arrives)."""
    last = list(windows[-count:])
    indices = [w.index for w in last]
    df = count - 1

    def verdict(stable: bool, statistic: str, value: float, p_value: float, alpha: float, reason: str,
                spread: float, threshold: float = 0.0, tails: list[int] | None = None,
                events: list[int] | None = None, judged: bool = False) -> StabilityVerdict:
        return StabilityVerdict(stable, indices, statistic, value, p_value, alpha, df, spread, threshold,
                                tails or [], events or [], judged, reason)

    if len(last) < count or count < 2:
        return verdict(False, "none", math.nan, math.nan, math.nan,
                       f"not stable: {len(last)} windows measured, {count} needed", math.nan)
    idle = [w.index for w in last if w.requests <= 0 or w.duration_s <= 0]
    if idle:
        return verdict(False, "none", math.nan, math.nan, math.nan,
                       f"not stable: window {idle[0]} answered no requests", math.inf)

    spread, t_stat, t_p, throughput_differs = _throughput(last, throughput_alpha)
    if throughput_differs:
        return verdict(False, "poisson-dispersion chi-square", t_stat, t_p, throughput_alpha,
                       f"not stable: throughput differs across windows {indices} (spread {spread:.1%} > "
                       f"{THROUGHPUT_TOLERANCE:.0%}; Poisson dispersion chi-square {t_stat:.1f}, df {df}, "
                       f"p={t_p:.2g} < {throughput_alpha:g})", spread)

    threshold, above, totals = tail_counts([w.histogram for w in last])
    gap_s = event_gap_s(sum(totals), sum(w.duration_s for w in last))
    events = [tail_events(w, threshold, a, gap_s) for w, a in zip(last, above)]
    declustered = any(w.slowest is not None for w in last)
    unit = "tail events" if declustered else "tail counts"
    statistic_name = "tail-event chi-square" if declustered else "tail-count chi-square"
    counts_text = ", ".join(str(a) for a in above) + " above"
    if declustered:
        counts_text = (", ".join(str(e) for e in events) + " events of "
                       + ", ".join(str(a) for a in above) + " requests above")
    pooled_total = sum(totals)
    share = sum(events) / pooled_total if pooled_total else 0.0
    expected = [n * share for n in totals]
    if share <= 0.0 or share >= 1.0 or min(expected) < MIN_EXPECTED_TAIL:
        thin = int(np.argmin(expected))
        return verdict(True, "poisson-dispersion chi-square", t_stat, t_p, throughput_alpha,
                       f"stable on throughput over windows {indices} (spread {spread:.1%}); p99 not judged: "
                       f"window {indices[thin]} expects {expected[thin]:.1f} {unit} above the pooled p99 "
                       f"({counts_text} {threshold / 1000:.3g} ms), {MIN_EXPECTED_TAIL:g} needed",
                       spread, threshold, above, events)
    statistic = sum((a - e) ** 2 / (e * (1.0 - share)) for a, e in zip(events, expected))
    p_value = chi_square_sf(statistic, df)
    if p_value < tail_alpha:
        return verdict(False, statistic_name, statistic, p_value, tail_alpha,
                       f"not stable: {unit} above the pooled p99 differ across windows {indices} "
                       f"({counts_text} {threshold / 1000:.3g} ms; chi-square {statistic:.1f}, df {df}, "
                       f"p={p_value:.2g} < {tail_alpha:g})", spread, threshold, above, events, True)
    return verdict(True, statistic_name, statistic, p_value, tail_alpha,
                   f"stable over windows {indices}: {unit} above the pooled p99 agree ({counts_text} "
                   f"{threshold / 1000:.3g} ms; chi-square {statistic:.1f}, df {df}, p={p_value:.2g}), "
                   f"throughput spread {spread:.1%}", spread, threshold, above, events, True)


def is_stable(windows: Sequence[WindowSummary], count: int = STABLE_WINDOWS) -> bool:
    """True when :func:`judge` calls the last ``count`` windows stable."""
    return judge(windows, count).stable
