"""Predictive quality of live answers: predicted likes against the pupdates' known likes.

Only unmodified held-out pupdates are scored. The workload reuses pupdates with an extra
hashtag (``#round2``, id ``<id>~<round>``) so their cache keys stay unique; such a pupdate's
inputs no longer match its known likes, so it is counted as excluded, never scored.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from poochlab.experiments.recording.histograms import decode, encode, merge_encoded

REUSE_MARK = "~"  # experiments/load/workload.py _unique: how a reused (altered) pupdate's id is marked


def is_unmodified(pupdate: Any) -> bool:
    """A pupdate as it was drawn: it has known likes and was not altered to defeat the cache."""
    return getattr(pupdate, "likes", None) is not None and REUSE_MARK not in str(getattr(pupdate, "id", ""))


def score_rows(pupdates: Sequence[Any], predicted: Sequence[float]) -> tuple[int, float, float, float, int]:
    """(scored, sum of |predicted - likes|, sum of known likes, sum of predicted, excluded)."""
    scored = excluded = 0
    abs_error = likes = guessed = 0.0
    for pupdate, value in zip(pupdates, predicted):
        if is_unmodified(pupdate):
            scored += 1
            abs_error += abs(float(value) - pupdate.likes)
            likes += pupdate.likes
            guessed += float(value)
        else:
            excluded += 1
    return scored, abs_error, likes, guessed, excluded


ARM_SUMS = ("requests", "errors", "scored", "abs_error", "likes", "predicted", "excluded")


def arm_summary(counts: Mapping[str, float], histogram: Any) -> dict[str, Any]:
    """One arm's row: pupdates served and scored, mean known likes, MAE, and its latency
    percentiles from the merged histogram (ms)."""
    scored = int(counts.get("scored", 0))
    total = histogram.get_total_count()
    return {
        "requests": int(counts.get("requests", 0)),
        "errors": int(counts.get("errors", 0)),
        "pupdates_scored": scored,
        "pupdates_excluded": int(counts.get("excluded", 0)),
        "mean_likes": counts["likes"] / scored if scored else None,
        "mean_predicted": counts["predicted"] / scored if scored else None,
        "mae": counts["abs_error"] / scored if scored else None,
        "p50_ms": histogram.get_value_at_percentile(50) / 1000 if total else None,
        "p99_ms": histogram.get_value_at_percentile(99) / 1000 if total else None,
    }


def add_arms(windows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The A/B arms of ``windows`` (WindowData: workers' parts of one window, or a trial's
    windows) added up: per arm its sums (ARM_SUMS) and its latency histogram merged (hdrh text)."""
    sums: dict[str, Counter] = {}
    for window in windows:
        for arm, counts in window.arms.items():
            sums.setdefault(arm, Counter()).update({k: counts.get(k, 0) for k in ARM_SUMS})
    return {arm: {**dict(counts), "histogram": encode(merge_encoded(
        [w.arms[arm]["histogram"] for w in windows if arm in w.arms]))} for arm, counts in sums.items()}


def merged_arms(windows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Each A/B arm over ``windows`` (WindowData): :func:`add_arms` (counts added, histograms
    merged, never percentiles averaged), then summarised by :func:`arm_summary`."""
    return {arm: {**arm_summary(added, decode(added["histogram"])), "histogram": added["histogram"]}
            for arm, added in add_arms(windows).items()}
