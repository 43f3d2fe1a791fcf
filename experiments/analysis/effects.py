"""Each factor's effect, estimated from pairs of configurations that differ only in that factor.

For a factor F with a baseline value (the spec's first) and another value L, every setting of the
other factors where both F=baseline and F=L were measured with valid trials gives one pair. The
pair's effect is the difference of the two configurations' merged percentiles (L minus baseline),
and their ratio. Each configuration's bootstrap draws (the same two-level block bootstrap as the
configuration table: repetitions, then windows) are made once, so a pair's interval, the summary
over all pairs (the mean difference, the geometric-mean ratio) and the interaction contrasts are
all arithmetic on the same draws.

An interaction is F's effect changing with another factor G: the mean log-ratio of F's pairs at
one value of G minus that at G's baseline, with its interval. Ratios, not milliseconds, because a
factor that doubles p99 adds more milliseconds where p99 is large without interacting with anything.

Everything lands in one long table (``tables/effects``), which the findings and the effects figure
read; nothing here is a sentence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from poochlab.experiments.analysis.bootstrap import interval_of, resample_percentiles, resample_rates
from poochlab.experiments.analysis.run_analysis import RunAnalysis, config_seed

# metric -> (configuration-table column, unit)
METRICS: dict[str, tuple[str, str]] = {"p50": ("p50_ms", "ms"), "p99": ("p99_ms", "ms"),
                                       "throughput": ("throughput_rps", "req/s")}
EFFECT_COLUMNS = [
    "kind", "factor", "baseline", "level", "other", "metric", "unit", "baseline_value", "level_value",
    "difference", "difference_ci_low", "difference_ci_high", "ratio", "ratio_ci_low", "ratio_ci_high",
    "pairs", "verdict", "schema_version",
]
# verdicts of a difference interval
INCREASES, DECREASES, NO_EFFECT, CANNOT_TELL = "increases", "decreases", "no measurable effect", "cannot tell"
DEPENDS, SAME = "depends", "does not measurably change"


def verdict(low: float, high: float) -> str:
    """What a 95% interval of a difference says: a sign when it excludes zero."""
    if math.isnan(low) or math.isnan(high):
        return CANNOT_TELL
    if low > 0:
        return INCREASES
    if high < 0:
        return DECREASES
    return NO_EFFECT


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def factor_levels(analysis: RunAnalysis, factor: str) -> list[Any]:
    """A factor's values in the spec's order (its first value is the baseline), else as measured."""
    measured = list(dict.fromkeys(analysis.configs[factor].tolist()))
    declared = ((analysis.run.manifest.get("spec") or {}).get("factors") or {}).get(factor)
    if isinstance(declared, list):
        by_key = {_key(v): v for v in measured}
        ordered = [by_key[_key(_plain(v))] for v in declared if _key(_plain(v)) in by_key]
        return ordered + [v for v in measured if v not in ordered]
    return measured


def _plain(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


@dataclass
class _Draws:
    p50: np.ndarray
    p99: np.ndarray
    throughput: np.ndarray

    def of(self, metric: str) -> np.ndarray:
        return getattr(self, metric)


def _config_draws(analysis: RunAnalysis, config_id: str) -> _Draws:
    trials = analysis.decoded.get(config_id, [])
    resamples = analysis.resamples
    seed = config_seed(analysis.bootstrap_seed, config_id)
    blocks = [t.merged_windows for t in trials]
    if sum(len(b) for b in blocks) < 2:
        missing = np.full(resamples, np.nan)
        return _Draws(missing, missing, missing)
    # The same seed as the configuration table's intervals: the same draws.
    percentiles = resample_percentiles(blocks, (50.0, 99.0), np.random.default_rng(seed), resamples) / 1000.0
    rates = []
    for trial in trials:
        merged = set(trial.merged_indices)
        windows = [w for w in trial.record.windows if w.index in merged]
        rates.append((np.array([w.requests for w in windows], float), np.array([w.duration_s for w in windows], float)))
    throughput = resample_rates(rates, np.random.default_rng(seed + 1), resamples)
    return _Draws(percentiles[:, 0], percentiles[:, 1], throughput)


@dataclass
class _Pair:
    other: dict[str, Any]  # the other factors' values
    baseline_id: str
    level_id: str


def _setting_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{n}={v}" for n, v in values.items()) or "all"


def _row(kind: str, factor: str, baseline: Any, level: Any, other: str, metric: str, baseline_value: float,
         level_value: float, diffs: np.ndarray, log_ratios: np.ndarray, pairs: int, difference: float,
         ratio: float) -> dict[str, Any]:
    unit = METRICS[metric][1]
    diff_ci = interval_of(diffs)
    ratio_ci = interval_of(log_ratios)
    return {
        "kind": kind, "factor": factor, "baseline": str(baseline), "level": str(level), "other": other,
        "metric": metric, "unit": unit, "baseline_value": baseline_value, "level_value": level_value,
        "difference": difference, "difference_ci_low": diff_ci.low, "difference_ci_high": diff_ci.high,
        "ratio": ratio, "ratio_ci_low": math.exp(ratio_ci.low) if not math.isnan(ratio_ci.low) else math.nan,
        "ratio_ci_high": math.exp(ratio_ci.high) if not math.isnan(ratio_ci.high) else math.nan,
        "pairs": pairs, "verdict": verdict(diff_ci.low, diff_ci.high),
    }


def _log_ratio(level: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(level / baseline)


def estimate_effects(analysis: RunAnalysis) -> pd.DataFrame:
    """The effects table: per pair, per factor overall, per value of each other factor, and the
    interaction contrasts. Only configurations with valid trials take part."""
    from poochlab.experiments.analysis.run_analysis import TABLE_SCHEMA_VERSION

    configs = analysis.configs
    usable = configs[configs["has_valid"].astype(bool)] if "has_valid" in configs else configs
    factors = analysis.label_factors
    rows: list[dict[str, Any]] = []
    draws: dict[str, _Draws] = {}

    def draws_of(config_id: str) -> _Draws:
        if config_id not in draws:
            draws[config_id] = _config_draws(analysis, config_id)
        return draws[config_id]

    by_id = usable.set_index("config_id")
    for factor in factors:
        others = [f for f in factors if f != factor]
        levels = factor_levels(analysis, factor)
        baseline = levels[0]
        for level in levels[1:]:
            pairs: list[_Pair] = []
            groups = usable.groupby(others, dropna=False, sort=False) if others else [((), usable)]
            for key, group in groups:
                key = key if isinstance(key, tuple) else (key,)
                at_base = group[group[factor].map(_key) == _key(baseline)]
                at_level = group[group[factor].map(_key) == _key(level)]
                if len(at_base) == 1 and len(at_level) == 1:
                    pairs.append(_Pair(dict(zip(others, key)), at_base["config_id"].iloc[0], at_level["config_id"].iloc[0]))
            for metric, (column, _) in METRICS.items():
                diffs, logs, base_values, level_values = [], [], [], []
                for pair in pairs:
                    base_value = float(by_id.loc[pair.baseline_id, column])
                    level_value = float(by_id.loc[pair.level_id, column])
                    d_base, d_level = draws_of(pair.baseline_id).of(metric), draws_of(pair.level_id).of(metric)
                    diffs.append(d_level - d_base)
                    logs.append(_log_ratio(d_level, d_base))
                    base_values.append(base_value)
                    level_values.append(level_value)
                    rows.append(_row("pair", factor, baseline, level, _setting_text(pair.other), metric, base_value,
                                     level_value, diffs[-1], logs[-1], 1, level_value - base_value,
                                     level_value / base_value if base_value else math.nan))
                if not pairs:
                    rows.append(_row("overall", factor, baseline, level, "", metric, math.nan, math.nan,
                                     np.array([]), np.array([]), 0, math.nan, math.nan))
                    continue
                points = np.array(level_values) - np.array(base_values)
                point_logs = np.log(np.array(level_values) / np.array(base_values))
                rows.append(_row("overall", factor, baseline, level, f"mean over {len(pairs)} settings", metric,
                                 float(np.mean(base_values)), float(np.mean(level_values)),
                                 np.mean(diffs, axis=0), np.mean(logs, axis=0), len(pairs), float(points.mean()),
                                 float(np.exp(point_logs.mean()))))
                if metric != "p99":
                    continue
                # The effect at each value of every other factor, and whether it differs from the
                # effect at that factor's baseline value (an interaction), on the log-ratio scale.
                for other in others:
                    other_levels = factor_levels(analysis, other)
                    at: dict[str, tuple[Any, list[int]]] = {}
                    for index, pair in enumerate(pairs):
                        at.setdefault(_key(pair.other[other]), (pair.other[other], []))[1].append(index)
                    ordered = [(value, at[_key(value)][1]) for value in other_levels if _key(value) in at]
                    for value, chosen in ordered:
                        rows.append(_row("at", factor, baseline, level, f"{other}={value}", metric,
                                         float(np.mean([base_values[i] for i in chosen])),
                                         float(np.mean([level_values[i] for i in chosen])),
                                         np.mean([diffs[i] for i in chosen], axis=0),
                                         np.mean([logs[i] for i in chosen], axis=0), len(chosen),
                                         float(points[chosen].mean()), float(np.exp(point_logs[chosen].mean()))))
                    if len(ordered) < 2:
                        continue
                    first_value, first = ordered[0]
                    first_logs = np.mean([logs[i] for i in first], axis=0)
                    for value, chosen in ordered[1:]:
                        contrast = np.mean([logs[i] for i in chosen], axis=0) - first_logs
                        point = float(point_logs[chosen].mean() - point_logs[first].mean())
                        ci = interval_of(contrast)
                        rows.append({
                            "kind": "interaction", "factor": factor, "baseline": str(baseline), "level": str(level),
                            "other": f"{other}={value} vs {other}={first_value}", "metric": metric, "unit": "ratio",
                            "baseline_value": math.nan, "level_value": math.nan, "difference": math.nan,
                            "difference_ci_low": math.nan, "difference_ci_high": math.nan,
                            # how many times larger F's ratio is at this value than at G's baseline
                            "ratio": math.exp(point),
                            "ratio_ci_low": math.exp(ci.low) if not math.isnan(ci.low) else math.nan,
                            "ratio_ci_high": math.exp(ci.high) if not math.isnan(ci.high) else math.nan,
                            "pairs": len(chosen) + len(first),
                            "verdict": (CANNOT_TELL if math.isnan(ci.low) else
                                        DEPENDS if ci.low > 0 or ci.high < 0 else SAME),
                        })
    table = pd.DataFrame(rows, columns=[c for c in EFFECT_COLUMNS if c != "schema_version"])
    table["schema_version"] = TABLE_SCHEMA_VERSION
    return table
