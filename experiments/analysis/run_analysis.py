"""From a saved run to its tidy tables: trials, configurations, windows and percentile spectra.

The configuration table merges the histograms of all repetitions (never averages percentiles)
and carries 95% block-bootstrap intervals for p50 and p99. Everything later (budget, plots,
report, notebook, compare) reads these tables, plus the decoded windows for ``compare``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from poochlab.experiments.analysis.bootstrap import (
    DEFAULT_RESAMPLES,
    percentile_intervals,
)
from poochlab.experiments.analysis.bucket_counts import add_counts, percentile_us, summary_ms
from poochlab.experiments.analysis.saved_run import SavedRun
from poochlab.experiments.analysis.trial_metrics import (
    DecodedTrial,
    breakdown_ms,
    decode_trial,
    hides_stalls,
    tail_count,
    trial_row,
)
from poochlab.experiments.sweep.factors import factor_roles, factors_with_role

# 2: numbers of a configuration come from its valid trials only; validity categories, cache errors
# by reason, coordinated-omission flags, tail counts and the effects table were added.
TABLE_SCHEMA_VERSION = 2
# Load factors: compared within, never "optimised" over (the lowest load always wins on p99).
# The registry's roles (experiments/sweep/factors.py); a run's own roles come from its manifest.
LOAD_FACTORS = factors_with_role("load")
# Grid of the percentile spectrum: x = 1/(1-p) from 1.1 to 100,000 (p up to 99.999%).
SPECTRUM_X = np.logspace(np.log10(1.1), 5, 40)


@dataclass
class RunAnalysis:
    run: SavedRun
    factors: list[str]  # every factor, in the spec's order
    varied: list[str]  # factors that take more than one value in this run
    trials: pd.DataFrame
    configs: pd.DataFrame
    windows: pd.DataFrame
    spectrum: pd.DataFrame
    decoded: dict[str, list[DecodedTrial]]  # config_id -> its valid trials (the only ones with numbers)
    notes: list[str] = field(default_factory=list)  # graceful degradations, shown in the report
    warnings: list[str] = field(default_factory=list)  # validity problems, shown in the report
    bootstrap_seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    # A varied factor that moves in lockstep with an earlier one (users with load_level) -> that one.
    aliases: dict[str, str] = field(default_factory=dict)
    # Each factor's analysis role ("load", "transfer", "design"), as the run's manifest recorded it.
    roles: dict[str, str] = field(default_factory=dict)

    def with_role(self, role: str) -> list[str]:
        """The factors this run gave ``role`` (the registry's when the run predates it)."""
        roles = self.roles or factor_roles({})
        return [name for name, given in roles.items() if given == role]
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def label_factors(self) -> list[str]:
        return [name for name in self.varied if name not in self.aliases]


def _plain(value: Any) -> Any:
    """Factor values as table cells: lists and dicts become compact JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _uniform_columns(frame: pd.DataFrame, columns: list[str]) -> None:
    """A factor column mixing types (8 and "off") is stored as text so Parquet can hold it."""
    for column in columns:
        if column not in frame:
            continue
        kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))


def lockstep_aliases(records: list[Any], varied: list[str]) -> dict[str, str]:
    """Varied factors whose value is fixed by an earlier varied factor's value and vice versa.

    A sweep may set ``users`` from ``load_level``; no two configurations then differ in one but not
    the other, so the pair is one factor for labels and effects.
    """
    aliases: dict[str, str] = {}

    def key(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    for index, name in enumerate(varied):
        for earlier in varied[:index]:
            if earlier in aliases:
                continue
            pairs = {(key(r.factors.get(earlier)), key(r.factors.get(name))) for r in records}
            if len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}):
                aliases[name] = earlier
                break
    return aliases


def trial_category(status: str, category: str) -> str:
    """A trial's validity category for tables: a failed trial is "failed" whatever it recorded."""
    return "failed" if status != "ok" else category


def config_label(factors: dict[str, Any], varied: list[str]) -> str:
    shown = [f"{name}={_plain(factors.get(name))}" for name in varied]
    return ", ".join(shown) if shown else "all trials"


def _analysis_seed(manifest: dict[str, Any]) -> int:
    seeds = manifest.get("seeds")
    if isinstance(seeds, dict):
        for key in ("analysis", "sweep"):
            if isinstance(seeds.get(key), int):
                return int(seeds[key])
    if isinstance(seeds, int):
        return seeds
    return 0


def analyze(run: SavedRun, resamples: int = DEFAULT_RESAMPLES) -> RunAnalysis:
    """Decode every trial and build all tables (raises nothing for missing optional data)."""
    factors = run.spec_factor_names()
    controls = run.control_columns()
    warnings = [f"unreadable trial skipped: {reason}" for _, reason in run.unreadable]
    notes: list[str] = []
    decoded_by_trial: dict[str, DecodedTrial] = {}
    for record in run.trials:
        source = str(run.path / "trials" / f"{record.trial_id}.json")
        try:
            decoded_by_trial[record.trial_id] = decode_trial(record, source)
        except ValueError as error:
            warnings.append(f"unreadable trial skipped: {error}")
    records = [d.record for d in decoded_by_trial.values()]
    varied = [n for n in factors if len({json.dumps(r.factors.get(n), sort_keys=True, default=str) for r in records}) > 1]
    aliases = lockstep_aliases(records, varied)
    label_factors = [n for n in varied if n not in aliases]

    trial_rows, window_rows = [], []
    for trial_id, trial in decoded_by_trial.items():
        record = trial.record
        source = str(run.path / "trials" / f"{trial_id}.json")
        row: dict[str, Any] = {
            "run_id": record.run_id,
            "trial_id": trial_id,
            "config_id": record.config_id,
            "repetition": record.repetition,
            "seed": record.seed,
            "status": record.status,
            "failure_reason": record.failure_reason or "",
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "load_mode": str(record.load.mode or ""),
        }
        row.update({name: _plain(record.factors.get(name)) for name in factors + controls})
        row.update(trial_row(trial, source))
        validity = record.validity
        row["valid"] = bool(validity.valid) and record.status == "ok"
        row["validity_category"] = trial_category(record.status, validity.category)
        invalid = list(validity.reasons)
        if record.status != "ok":
            invalid.insert(0, f"failed: {record.failure_reason or 'no reason recorded'}")
        kinds = list(validity.kinds) + ["invalid"] * (len(validity.reasons) - len(validity.kinds))
        row["invalid_reasons"] = "; ".join(invalid)
        row["invalid_kinds"] = "; ".join((["failed"] if record.status != "ok" else []) + kinds)
        row["server_overloaded"] = bool(validity.server_overloaded) and row["valid"]
        row["validity_findings"] = "; ".join(validity.findings)
        warned = list(validity.warnings)
        if row["co_hiding_stalls"]:
            warned.append(f"coordinated omission hides stalls: corrected p99 {row['p99_corrected_ms']:.3g} ms is more "
                          f"than twice the measured {row['p99_ms']:.3g} ms")
        row["validity_warnings"] = "; ".join(warned)
        row["validity_reasons"] = "; ".join(invalid + trial.notes)
        rate = record.load.rate_rps
        row["planned_rate_rps"] = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else math.nan
        row["schema_version"] = TABLE_SCHEMA_VERSION
        trial_rows.append(row)
        if not row["valid"] or trial.notes or warned:
            label = config_label(record.factors, label_factors)
            text = "; ".join(t for t in (row["validity_reasons"], row["validity_warnings"]) if t) or "invalid"
            warnings.append(f"trial {trial_id} ({label}): {text}")
        merged = set(trial.merged_indices)
        for window in record.windows:
            counts = trial.window_counts[window.index]
            window_rows.append(
                {
                    "trial_id": trial_id,
                    "config_id": record.config_id,
                    "repetition": record.repetition,
                    "window": window.index,
                    "start_s": window.start_s,
                    "duration_s": window.duration_s,
                    "requests": window.requests,
                    "errors": window.errors,
                    "throughput_rps": window.requests / window.duration_s if window.duration_s else math.nan,
                    "p50_ms": percentile_us(counts, 50.0) / 1000.0,
                    "p99_ms": percentile_us(counts, 99.0) / 1000.0,
                    "merged": window.index in merged,
                    "schema_version": TABLE_SCHEMA_VERSION,
                }
            )

    trials = pd.DataFrame(trial_rows)
    if trials.empty:
        raise ValueError(f"{run.path}: no readable trial records in {run.path / 'trials'}")
    trials = trials.sort_values(["config_id", "repetition", "trial_id"]).reset_index(drop=True)
    _uniform_columns(trials, factors + controls)
    windows = pd.DataFrame(window_rows)

    seed = _analysis_seed(run.manifest)
    decoded_by_config: dict[str, list[DecodedTrial]] = {}
    valid_ids = set(trials.loc[trials["valid"], "trial_id"])
    for trial_id, trial in decoded_by_trial.items():
        # A configuration's numbers come from its valid trials only: an invalid trial measured the
        # instrument, not the server.
        if trial_id in valid_ids and trial.merged_indices:
            decoded_by_config.setdefault(trial.record.config_id, []).append(trial)
    config_rows, spectrum_rows = [], []
    for config_id, group in trials.groupby("config_id", sort=True):
        config_rows.append(_config_row(config_id, group, decoded_by_config.get(config_id, []), factors + controls,
                                       label_factors, seed, resamples))
        ok = decoded_by_config.get(config_id, [])
        if ok:
            config_counts = add_counts(t.merged_counts for t in ok)
            for x in SPECTRUM_X:
                p = 100.0 * (1.0 - 1.0 / x)
                spectrum_rows.append(
                    {"config_id": config_id, "percentile": p, "x": x, "latency_ms": percentile_us(config_counts, p) / 1000.0,
                     "schema_version": TABLE_SCHEMA_VERSION}
                )
    configs = pd.DataFrame(config_rows)
    _uniform_columns(configs, factors + controls)
    spectrum = pd.DataFrame(spectrum_rows, columns=["config_id", "percentile", "x", "latency_ms", "schema_version"])

    if (trials["status"] != "ok").all():
        notes.append("no trial of this run succeeded: there are no latencies to report, only the failures below")
    elif (configs["repetitions"] == 0).all():
        notes.append("no trial of this run is valid: there are no latencies to report, only the reasons below")
    elif (configs["repetitions"] <= 1).all():
        notes.append("one repetition per configuration: intervals come from windows within one run and say nothing about run-to-run variation")
    if trials["queue_mean_ms"].isna().all():
        notes.append("no server-side timing recorded: queue and compute times are missing, the breakdown shows client and everything else")
    if trials["cache_hit_ratio_achieved"].isna().all():
        notes.append("no cache in this run: cache hit ratios are not applicable")
    if trials["energy_joules"].isna().all():
        notes.append("no energy measurement recorded")
    elif set(trials["energy_method"]) - {"rapl", ""}:
        notes.append("energy is an estimate from CPU time (no RAPL counters on this machine), not a measurement")
    return RunAnalysis(
        run=run, factors=factors, varied=varied, trials=trials, configs=configs, windows=windows,
        spectrum=spectrum, decoded=decoded_by_config, notes=notes, warnings=warnings,
        bootstrap_seed=seed, resamples=resamples, aliases=aliases, roles=factor_roles(run.manifest),
    )


def config_seed(base_seed: int, config_id: str) -> int:
    """Each configuration's bootstrap gets its own seed, stable across re-renders."""
    return (base_seed * 1_000_003 + zlib.crc32(config_id.encode())) % (2**32)


def _config_row(
    config_id: str,
    group: pd.DataFrame,
    ok: list[DecodedTrial],
    factors: list[str],
    varied: list[str],
    base_seed: int,
    resamples: int,
) -> dict[str, Any]:
    first = group.iloc[0]
    factor_values = {name: first[name] for name in factors}
    # Only valid trials give numbers; the rest are counted and their reasons listed.
    good = group[group["valid"].astype(bool)]
    row: dict[str, Any] = {"config_id": config_id, "label": config_label(factor_values, varied)}
    row.update(factor_values)
    row.update(repetitions=len(ok), repetitions_failed=int((group["status"] != "ok").sum()))
    row["has_valid"] = bool(len(ok))
    blocks = [t.merged_windows for t in ok]
    merged = add_counts(t.merged_counts for t in ok) if ok else np.zeros(1, dtype=np.int64)
    row.update(summary_ms(merged))
    row["windows"] = int(sum(len(b) for b in blocks))
    row["requests"] = int(good["requests"].sum())
    row["p99_tail_requests"] = tail_count(int(merged.sum()), 99.0)
    events = good["p99_tail_events"] if "p99_tail_events" in good else None
    # summed over the valid trials, each counted above its own p99 (unknown for older runs)
    row["p99_tail_events"] = float(events.sum()) if events is not None and len(events) and events.notna().all() else float("nan")
    p50, p99 = percentile_intervals(blocks, (50.0, 99.0), config_seed(base_seed, config_id), resamples)
    row.update(
        p50_ci_low_ms=p50.low / 1000.0, p50_ci_high_ms=p50.high / 1000.0,
        p99_ci_low_ms=p99.low / 1000.0, p99_ci_high_ms=p99.high / 1000.0,
    )
    if row["windows"] < 2:
        row["ci_note"] = "no interval: fewer than 2 windows"
    elif len(ok) == 1:
        row["ci_note"] = "windows of one repetition only"
    else:
        row["ci_note"] = ""
    duration = good["duration_s"].sum()
    row["throughput_rps"] = row["requests"] / duration if duration else math.nan
    row["throughput_min_rps"] = good["throughput_rps"].min() if len(good) else math.nan
    row["throughput_max_rps"] = good["throughput_rps"].max() if len(good) else math.nan
    errors = good["errors"].sum()
    row["error_rate"] = errors / (errors + row["requests"]) if errors + row["requests"] else math.nan
    for column in ("fallback_rate", "queue_mean_ms", "compute_mean_ms", "client_encode_ms", "client_wait_ms",
                   "client_decode_ms", "model_answer_share", "server_cpu_s", "energy_joules", "energy_per_request_mj"):
        row[column] = good[column].mean() if len(good) and good[column].notna().any() else math.nan
    corrected = [t.corrected_counts for t in ok if t.corrected_counts is not None]
    row["p99_corrected_ms"] = (
        percentile_us(add_counts(corrected), 99.0) / 1000.0 if ok and len(corrected) == len(ok) else math.nan
    )
    row["co_hiding_stalls"] = hides_stalls(row["p99_ms"], row["p99_corrected_ms"])
    hits, misses = good["cache_hits"].sum(min_count=1), good["cache_misses"].sum(min_count=1)
    row["cache_hit_ratio_achieved"] = hits / (hits + misses) if not (math.isnan(hits) or math.isnan(misses)) and hits + misses else math.nan
    planned = factor_values.get("cache_hit_ratio")
    row["cache_hit_ratio_planned"] = float(planned) if isinstance(planned, (int, float)) and not isinstance(planned, bool) else math.nan
    row["cache_errors"] = good["cache_errors"].sum(min_count=1) if len(good) else math.nan
    by_reason: dict[str, int] = {}
    for text in good["cache_errors_by_reason"]:
        for reason, count in (json.loads(text) if text else {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + int(count)
    row["cache_errors_by_reason"] = json.dumps(by_reason, sort_keys=True) if by_reason else ""
    row["planned_rate_rps"] = group["planned_rate_rps"].max() if group["planned_rate_rps"].notna().any() else math.nan
    row.update(breakdown_ms(row))
    row["valid_trials"] = int(group["valid"].sum())
    row["invalid_trials"] = int((~group["valid"]).sum())
    row["server_overloaded_trials"] = int(group["server_overloaded"].sum())
    reasons = sorted({r for text in group["validity_reasons"] for r in str(text).split("; ") if r})
    row["validity_reasons"] = "; ".join(reasons)
    row["invalid_kinds"] = "; ".join(sorted({k for text in group["invalid_kinds"] for k in str(text).split("; ") if k}))
    row["validity_findings"] = "; ".join(sorted({f for text in good["validity_findings"] for f in str(text).split("; ") if f}))
    row["schema_version"] = TABLE_SCHEMA_VERSION
    return row
