"""Comparing two saved runs: which differences are larger than their confidence intervals.

Configurations are matched by their factor values (not by config id, which a changed spec may
renumber). For each match, p50 and p99 of B minus A get a 95% interval from a block bootstrap
of both runs (windows within repetitions, and repetitions); a difference counts as real when
that interval excludes zero. Runs from different machines, versions or dates are compared all
the same, with a warning, since such differences can be larger than any factor's effect.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from poochlab.experiments.analysis.bootstrap import DEFAULT_RESAMPLES, difference_intervals, percentile_intervals
from poochlab.experiments.analysis.bucket_counts import percentile_us
from poochlab.experiments.analysis.run_analysis import RunAnalysis

COMPARED_PERCENTILES = (50.0, 99.0)


@dataclass
class Comparison:
    rows: pd.DataFrame  # one row per matched configuration and percentile
    warnings: list[str] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)

    @property
    def significant(self) -> pd.DataFrame:
        return self.rows[self.rows["significant"]]


def _factor_key(factors: dict[str, Any], names: list[str]) -> str:
    return json.dumps({n: factors.get(n) for n in names}, sort_keys=True, default=str)


def _by_factors(analysis: RunAnalysis, names: list[str]) -> dict[str, tuple[str, list[np.ndarray]]]:
    """factor key -> (config label, the merged windows of each ok repetition)."""
    matched = {}
    for trials in analysis.decoded.values():
        key = _factor_key(trials[0].record.factors, names)
        label = ", ".join(f"{n}={trials[0].record.factors.get(n)}" for n in names) or "all trials"
        matched[key] = (label, [t.merged_windows for t in trials])
    return matched


def provenance_warnings(manifest_a: dict[str, Any], manifest_b: dict[str, Any]) -> list[str]:
    """What differs between the runs' conditions besides the factors."""
    warnings = []
    platform_a, platform_b = manifest_a.get("platform") or {}, manifest_b.get("platform") or {}
    for key in ("cpu_model", "cores", "kernel"):
        if platform_a.get(key) != platform_b.get(key):
            warnings.append(f"different machines: {key} {platform_a.get(key)!r} vs {platform_b.get(key)!r}")
    if manifest_a.get("python") != manifest_b.get("python"):
        warnings.append(f"different Python: {manifest_a.get('python')!r} vs {manifest_b.get('python')!r}")
    versions_a, versions_b = manifest_a.get("versions") or {}, manifest_b.get("versions") or {}
    changed = sorted(p for p in set(versions_a) | set(versions_b) if versions_a.get(p) != versions_b.get(p))
    if changed:
        warnings.append("different package versions: " + ", ".join(
            f"{p} {versions_a.get(p, 'absent')} vs {versions_b.get(p, 'absent')}" for p in changed))
    if manifest_a.get("server_kind") != manifest_b.get("server_kind"):
        warnings.append(f"different server kinds: {manifest_a.get('server_kind')!r} vs {manifest_b.get('server_kind')!r}")
    controls_a = (manifest_a.get("spec") or {}).get("controls") or {}
    controls_b = (manifest_b.get("spec") or {}).get("controls") or {}
    held = sorted(k for k in set(controls_a) | set(controls_b) if controls_a.get(k) != controls_b.get(k))
    if held:
        warnings.append("different controls (configurations are matched on factors only): " + ", ".join(
            f"{k} {controls_a.get(k, 'absent')!r} vs {controls_b.get(k, 'absent')!r}" for k in held))
    commit_a = (manifest_a.get("git") or {}).get("commit")
    commit_b = (manifest_b.get("git") or {}).get("commit")
    if commit_a != commit_b:
        warnings.append(f"different code: commit {commit_a} vs {commit_b}")
    date_a, date_b = _date(manifest_a.get("started_at")), _date(manifest_b.get("started_at"))
    if date_a is None or date_b is None:
        warnings.append("a run's start time is missing: cannot tell whether they were measured on the same day")
    elif date_a.date() != date_b.date():
        warnings.append(f"different dates: {date_a.date()} vs {date_b.date()} (machines drift; re-measure both together to be sure)")
    return warnings


def _date(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def compare_analyses(a: RunAnalysis, b: RunAnalysis, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Comparison:
    names = list(dict.fromkeys(a.factors + b.factors))
    configs_a, configs_b = _by_factors(a, names), _by_factors(b, names)
    rows = []
    for key in sorted(set(configs_a) & set(configs_b)):
        label, reps_a = configs_a[key]
        _, reps_b = configs_b[key]
        pair_seed = (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**32)
        ci_a = percentile_intervals(reps_a, COMPARED_PERCENTILES, pair_seed, resamples)
        ci_b = percentile_intervals(reps_b, COMPARED_PERCENTILES, pair_seed + 1, resamples)
        ci_diff = difference_intervals(reps_a, reps_b, COMPARED_PERCENTILES, pair_seed + 2, resamples)
        merged_a = sum(r.sum(axis=0) for r in reps_a)
        merged_b = sum(r.sum(axis=0) for r in reps_b)
        for i, p in enumerate(COMPARED_PERCENTILES):
            value_a = percentile_us(merged_a, p) / 1000.0
            value_b = percentile_us(merged_b, p) / 1000.0
            low, high = ci_diff[i].low / 1000.0, ci_diff[i].high / 1000.0
            rows.append({
                "configuration": label,
                "percentile": f"p{p:g}",
                "a_ms": value_a, "a_ci_low_ms": ci_a[i].low / 1000.0, "a_ci_high_ms": ci_a[i].high / 1000.0,
                "b_ms": value_b, "b_ci_low_ms": ci_b[i].low / 1000.0, "b_ci_high_ms": ci_b[i].high / 1000.0,
                "difference_ms": value_b - value_a,
                "relative_change": (value_b - value_a) / value_a if value_a else np.nan,
                "difference_ci_low_ms": low, "difference_ci_high_ms": high,
                "cis_overlap": ci_a[i].overlaps(ci_b[i]),
                # NaN bounds (too few windows) compare False: never called significant.
                "significant": bool(low > 0 or high < 0),
                "repetitions_a": len(reps_a), "repetitions_b": len(reps_b),
            })
    columns = ["configuration", "percentile", "a_ms", "a_ci_low_ms", "a_ci_high_ms", "b_ms", "b_ci_low_ms",
               "b_ci_high_ms", "difference_ms", "relative_change", "difference_ci_low_ms", "difference_ci_high_ms",
               "cis_overlap", "significant", "repetitions_a", "repetitions_b"]
    warnings = provenance_warnings(a.run.manifest, b.run.manifest)
    warnings += [f"run A: {w}" for w in a.warnings] + [f"run B: {w}" for w in b.warnings]
    only_a = [configs_a[k][0] for k in sorted(set(configs_a) - set(configs_b))]
    only_b = [configs_b[k][0] for k in sorted(set(configs_b) - set(configs_a))]
    if any(len(r) < 2 for _, r in list(configs_a.values()) + list(configs_b.values())):
        warnings.append("some configurations have one repetition: their intervals ignore run-to-run variation")
    return Comparison(pd.DataFrame(rows, columns=columns), warnings, only_a, only_b)
