"""The p99 budget, the throughput-versus-p99 Pareto front, and whether the best setting transfers.

A configuration meets the budget when its merged p99 is at or under it; the highest throughput
under the budget is the largest achieved throughput among those. Pareto-optimal configurations are
those no other configuration beats on both throughput (higher) and p99 (lower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
from poochlab.experiments.analysis.run_analysis import LOAD_FACTORS
from poochlab.experiments.sweep.factors import factors_with_role

# Factors across which the course brief asks whether the best configuration transfers.
# The registry's roles (experiments/sweep/factors.py); a run passes its own from its manifest.
TRANSFER_FACTORS = factors_with_role("transfer")


def pareto_optimal(throughput: pd.Series, latency: pd.Series) -> pd.Series:
    """True where no other point has throughput >= and latency <=, one of them strictly."""
    flags = []
    points = list(zip(throughput, latency))
    for i, (t, lat) in enumerate(points):
        if math.isnan(t) or math.isnan(lat):
            flags.append(False)
            continue
        dominated = any(
            j != i and t2 >= t and l2 <= lat and (t2 > t or l2 < lat)
            for j, (t2, l2) in enumerate(points)
            if not (math.isnan(t2) or math.isnan(l2))
        )
        flags.append(not dominated)
    return pd.Series(flags, index=throughput.index)


@dataclass
class BudgetResult:
    budget_ms: float | None
    meeting: pd.DataFrame  # configurations whose p99 is within the budget
    surely_meeting: pd.DataFrame  # ... whose whole p99 interval is within it
    best: pd.Series | None  # highest throughput under the budget


def apply_budget(configs: pd.DataFrame, budget_ms: float | None) -> BudgetResult:
    """Add ``pareto_optimal`` and ``meets_budget`` columns to ``configs`` and pick the best.

    A configuration without a valid trial has no numbers: it is never on the front, never meets
    the budget and is never the best.
    """
    usable = (configs["valid_trials"] > 0) if "valid_trials" in configs else pd.Series(True, index=configs.index)
    configs["pareto_optimal"] = pareto_optimal(configs["throughput_rps"].where(usable), configs["p99_ms"].where(usable))
    if budget_ms is None:
        configs["meets_budget"] = pd.NA
        return BudgetResult(None, configs.iloc[0:0], configs.iloc[0:0], None)
    configs["meets_budget"] = (configs["p99_ms"] <= budget_ms) & usable
    meeting = configs[configs["meets_budget"]].sort_values("throughput_rps", ascending=False)
    surely = meeting[meeting["p99_ci_high_ms"].fillna(meeting["p99_ms"]) <= budget_ms]
    best = meeting.iloc[0] if len(meeting) else None
    return BudgetResult(budget_ms, meeting, surely, best)


def sustainable_throughput(configs: pd.DataFrame, varied: list[str], budget_ms: float,
                           load_factors: Sequence[str] = LOAD_FACTORS) -> pd.DataFrame:
    """Per setting of the non-load factors: the most throughput any of its load levels achieved
    within the budget (the answer of a rate search over the sweep's load levels), or none."""
    setting = [f for f in varied if f not in load_factors]
    load = [f for f in varied if f in load_factors]
    if not load:
        return pd.DataFrame()
    rows = []
    groups = configs.groupby(setting, dropna=False) if setting else [((), configs)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {"setting": ", ".join(f"{n}={v}" for n, v in zip(setting, key)) or "all"}
        within = group[group["p99_ms"] <= budget_ms]
        if len(within):
            best = within.loc[within["throughput_rps"].idxmax()]
            row.update({"sustainable throughput req/s": best["throughput_rps"], "p99 ms there": best["p99_ms"],
                        "at load": ", ".join(f"{n}={best[n]}" for n in load)})
        else:
            row.update({"sustainable throughput req/s": float("nan"), "p99 ms there": group["p99_ms"].min(),
                        "at load": "none within the budget (lowest p99 shown)"})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("sustainable throughput req/s", ascending=False, na_position="last")


@dataclass
class TransferResult:
    factor: str
    rows: pd.DataFrame  # one row per (load setting, factor value): its best setting
    same_best: list[bool] = field(default_factory=list)  # per load setting


def best_setting_transfer(configs: pd.DataFrame, varied: list[str], budget_ms: float | None,
                          load_factors: Sequence[str] = LOAD_FACTORS,
                          transfer_factors: Sequence[str] = TRANSFER_FACTORS) -> list[TransferResult]:
    """For each varied transfer factor: the best setting of the other factors for each value.

    "Best" is the highest throughput under the budget when there is one, else the lowest p99.
    Load factors are held fixed (compared within each load setting), since the lightest load
    trivially has the lowest p99.
    """
    results = []
    for factor in (f for f in transfer_factors if f in varied):
        load = [f for f in varied if f in load_factors]
        setting = [f for f in varied if f != factor and f not in load_factors]
        if not setting:
            continue
        rows: list[dict[str, Any]] = []
        same: list[bool] = []
        groups = configs.groupby(load, dropna=False) if load else [((), configs)]
        for load_key, group in groups:
            winners = []
            for value, candidates in group.groupby(factor, dropna=False):
                chosen = _best(candidates, budget_ms)
                if chosen is None:
                    continue
                winner = ", ".join(f"{name}={chosen[name]}" for name in setting)
                winners.append(winner)
                row = {name: v for name, v in zip(load, load_key if isinstance(load_key, tuple) else (load_key,))}
                row.update({factor: value, "best_setting": winner, "p99_ms": chosen["p99_ms"], "throughput_rps": chosen["throughput_rps"]})
                rows.append(row)
            if len(winners) > 1:
                same.append(len(set(winners)) == 1)
        results.append(TransferResult(factor, pd.DataFrame(rows), same))
    return results


def _best(candidates: pd.DataFrame, budget_ms: float | None) -> pd.Series | None:
    candidates = candidates.dropna(subset=["p99_ms"])
    if candidates.empty:
        return None
    if budget_ms is not None:
        within = candidates[candidates["p99_ms"] <= budget_ms]
        if len(within):
            return within.sort_values("throughput_rps", ascending=False).iloc[0]
    return candidates.sort_values("p99_ms").iloc[0]
