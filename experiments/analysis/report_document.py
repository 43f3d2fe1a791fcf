"""The report's content as a list of blocks, rendered later to Markdown, HTML and a notebook.

Building the content once keeps the three formats saying the same thing. The report answers
first: findings (the question, the validity headline, each factor's effect with its interval,
interactions, the best configuration), then the figures that support them, the tables, the
validity details (invalid configurations, the generator's floor, warnings), threats to validity,
and last an appendix with the setup, variables and provenance.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from poochlab.experiments.analysis.calibration_summary import calibration_sentence, calibration_table
from poochlab.experiments.analysis.frontier import BudgetResult, TransferResult, sustainable_throughput
from poochlab.experiments.analysis.generator_floor import floor_p50_ms, floor_table
from poochlab.experiments.analysis.findings import (
    best_sentence,
    factor_sentences,
    interaction_sentences,
    omission_sentences,
    overload_sentences,
    question_of,
    validity_headline,
)
from poochlab.experiments.analysis.number_format import format_interval, format_number, format_ratio, format_signed
from poochlab.experiments.analysis.tables import tables_of
from poochlab.experiments.analysis.run_analysis import TABLE_SCHEMA_VERSION, RunAnalysis


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    frame: pd.DataFrame


@dataclass
class FigureBlock:
    name: str
    title: str
    caption: str
    png: bytes  # embedded in the HTML
    png_file: str  # relative to the run folder
    svg_file: str


@dataclass
class ReportDocument:
    title: str
    blocks: list[Any] = field(default_factory=list)

    def add(self, *blocks: Any) -> None:
        self.blocks.extend(blocks)


def _ci(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "–"
    return f"[{format_number(low)}, {format_number(high)}]"


def _with_ci(value: float, low: float, high: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return f"{format_number(value)} {_ci(low, high)}"


def short_labels(configs: pd.DataFrame, factors: list[str]) -> tuple[pd.Series, str]:
    """Labels naming only the factors that differ between these rows, and what they all share.

    A table of the four cache-on configurations then reads "protocol=rest, load_level=light" with
    "All rows: cache=on" stated once above it.
    """
    present = [f for f in factors if f in configs]
    shared = [f for f in present if configs[f].astype(str).nunique(dropna=False) == 1] if len(configs) > 1 else []
    differing = [f for f in present if f not in shared]
    labels = configs.apply(lambda row: ", ".join(f"{f}={row[f]}" for f in differing) or "all trials", axis=1) \
        if len(configs) else pd.Series(dtype=str)
    common = ", ".join(f"{f}={configs[f].iloc[0]}" for f in shared)
    return labels, common


def _errors_by_reason(row: pd.Series) -> str:
    """Cache errors of the valid trials by reason; older records kept only the total."""
    text = row.get("cache_errors_by_reason")
    if isinstance(text, str) and text:
        counts = json.loads(text)
        return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items(), key=lambda kv: -kv[1])) or "0"
    total = row.get("cache_errors", math.nan)
    if not isinstance(total, (int, float)) or math.isnan(total):
        return "–"
    return "0" if total == 0 else f"{int(total)} (reasons not recorded)"


def _hit_ratio(row: pd.Series) -> str:
    achieved = row.get("cache_hit_ratio_achieved", math.nan)
    planned = row.get("cache_hit_ratio_planned", math.nan)
    if isinstance(achieved, float) and math.isnan(achieved):
        return "–"
    if isinstance(planned, float) and not math.isnan(planned):
        return f"{format_number(achieved)} (planned {format_number(planned)})"
    return format_number(achieved)


def _tail_support(row: pd.Series) -> str:
    """Requests above the p99, and the tail events they form when the run counted them."""
    requests = row.get("p99_tail_requests")
    if requests is None or requests != requests:
        return "–"
    events = row.get("p99_tail_events")
    if events is None or events != events:
        return format_number(int(requests))
    return f"{format_number(int(requests))} ({_count(int(events), 'event')})"


def _corrected(row: pd.Series) -> str:
    value = row.get("p99_corrected_ms", math.nan)
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return format_number(value) + (" ⚠ over 2× p99" if bool(row.get("co_hiding_stalls", False)) else "")


def results_table(configs: pd.DataFrame, factors: list[str] | None = None) -> tuple[pd.DataFrame, str]:
    """The configuration table as the report shows it (ms, requests/s), with what its rows share.

    Only configurations with valid trials appear: the others have no numbers and are listed under
    Validity. The corrected p99 sits beside the measured one, and the number of requests above the
    p99 says how many requests the p99 rests on.
    """
    if "has_valid" in configs:
        configs = configs[configs["has_valid"].astype(bool)]
    configs = configs.sort_values("p99_ms")
    if factors is None:
        labels, common = configs["label"], ""
    else:
        labels, common = short_labels(configs, factors)
    rows = []
    for (index, row) in configs.iterrows():
        total = int(row["valid_trials"] + row["invalid_trials"])
        rows.append({
            "configuration": labels[index],
            "valid trials": f"{int(row['valid_trials'])}/{total}",
            "p50 ms [95% CI]": _with_ci(row["p50_ms"], row["p50_ci_low_ms"], row["p50_ci_high_ms"]),
            "p99 ms [95% CI]": _with_ci(row["p99_ms"], row["p99_ci_low_ms"], row["p99_ci_high_ms"]),
            # Closed loop only: p99 with HdrHistogram's correction for coordinated omission.
            "p99 corrected ms": _corrected(row),
            "requests above p99": _tail_support(row),
            "p99.9 ms": format_number(row["p99.9_ms"]),
            "max ms": format_number(row["max_ms"]),
            "throughput req/s": format_number(row["throughput_rps"]),
            "error rate": format_number(row["error_rate"]),
            "cache hit ratio": _hit_ratio(row),
            "cache errors by reason": _errors_by_reason(row),
            "energy mJ/request": format_number(row["energy_per_request_mj"]),
        })
    table = pd.DataFrame(rows)
    # Columns no configuration has a value for (no cache, no energy) only add noise.
    table = table[[c for c in table.columns if not (table[c] == "–").all()]] if len(table) else table
    return table, common


def _table_with_common(document: "ReportDocument", configs: pd.DataFrame, factors: list[str]) -> None:
    table, common = results_table(configs, factors)
    if common:
        document.add(Paragraph(f"All rows: {common}."))
    document.add(Table(table))


def _server_commands(commands: Any) -> list[str]:
    """The runner records {"server_config", "kind", "command"} per start; plain lists are read too."""
    lines = []
    for entry in commands if isinstance(commands, list) else []:
        if isinstance(entry, dict):
            command = entry.get("command") or []
            prefix = f"{entry.get('server_config', '?')} ({entry.get('kind', '?')}): "
        else:
            command, prefix = entry, ""
        lines.append(prefix + "`" + " ".join(map(str, command if isinstance(command, list) else [command])) + "`")
    return lines


def _placement(analysis: RunAnalysis) -> str:
    manifest = analysis.run.manifest
    for key in ("placement", "replica_placement"):
        if manifest.get(key):
            return _format_value(manifest[key])
    placements = [t.resources.placement for t in analysis.run.trials if t.resources.placement]
    if not placements:
        return "not recorded"
    distinct = {_format_value(p) for p in placements}
    first = placements[0]
    text = str(first.get("reason") or _format_value(first)) if isinstance(first, dict) else _format_value(first)
    return text + (f" ({len(distinct)} different placements over the trials; see tables and trial records)"
                   if len(distinct) > 1 else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _format_value(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


# The report's sections, in order; the renderers build the table of contents from these.
SECTION_FINDINGS = "Findings"
SECTION_FIGURES = "Figures"
SECTION_TABLES = "Tables"
SECTION_VALIDITY = "Validity"
SECTION_WORLDS = "Possible worlds: the A/B test"
SECTION_REACTIVE = "Reactive qualities"
SECTION_THREATS = "Threats to validity"
SECTION_APPENDIX = "Appendix: setup and provenance"


def effects_table(effects: pd.DataFrame) -> pd.DataFrame:
    """Each factor's overall effect per metric, as the report's table shows it."""
    overall = effects[effects["kind"] == "overall"] if len(effects) else effects
    rows = []
    for _, row in overall.iterrows():
        rows.append({
            "factor": row["factor"], "compared": f"{row['level']} vs {row['baseline']}", "metric": row["metric"],
            "difference [95% CI]": (f"{format_signed(row['difference'])} {row['unit']} "
                                    f"{format_interval(row['difference_ci_low'], row['difference_ci_high'], signed=True)}"),
            "ratio [95% CI]": f"{format_ratio(row['ratio'])} {format_interval(row['ratio_ci_low'], row['ratio_ci_high'])}",
            "pairs": int(row["pairs"]), "verdict": row["verdict"],
        })
    return pd.DataFrame(rows)


def build_document(
    analysis: RunAnalysis,
    budget: BudgetResult,
    transfers: list[TransferResult],
    figures: list[FigureBlock],
) -> ReportDocument:
    run = analysis.run
    manifest = run.manifest
    document = ReportDocument(title=f"Latency report: {run.run_id}")
    tables = tables_of(analysis, budget.budget_ms)
    factors = analysis.label_factors

    # Findings first: the validity headline, then the answer, all computed from the tables.
    document.add(Heading(2, SECTION_FINDINGS))
    document.add(Paragraph(f"**Question:** {question_of(manifest, analysis.label_factors)}"))
    document.add(Paragraph(validity_headline(tables)))
    document.add(Paragraph("What each factor does (effects from pairs of configurations that differ only in that "
                           "factor, both with valid trials):"))
    document.add(Bullets(factor_sentences(tables)))
    document.add(Paragraph("Interactions and what else the data show:"))
    document.add(Bullets(interaction_sentences(tables) + overload_sentences(tables) + omission_sentences(tables)))
    document.add(Paragraph(best_sentence(tables)))

    document.add(Heading(2, SECTION_FIGURES))
    for figure in figures:
        document.add(Heading(3, figure.title), figure)

    document.add(Heading(2, SECTION_TABLES))
    document.add(Heading(3, "Effects"))
    document.add(Paragraph("Each factor's effect: the mean over settings of the other factors of the difference "
                           "(and geometric-mean ratio) between paired configurations; 95% block-bootstrap intervals. "
                           "Per pair and per value of each other factor: `tables/effects.csv`."))
    document.add(Table(effects_table(analysis.effects)) if len(analysis.effects)
                 else Paragraph("No effect could be estimated (no varied factor with valid pairs)."))
    document.add(Heading(3, "Configurations"))
    document.add(Paragraph("Per configuration with valid trials, valid repetitions merged (histograms added, never "
                           "percentiles averaged); 95% intervals from a block bootstrap over windows within "
                           "repetitions and over repetitions. Sorted by p99. \"requests above p99\" is how many "
                           "requests the p99 rests on (n × 1%): a p99 over a dozen requests is imprecise whatever "
                           "its interval. In brackets, the tail events they form (slow answers that arrived within "
                           "a few ms of each other, as one stall releases them, count once): a p99 resting on a "
                           "handful of events is set by whether a stall happened to fall in the measurement. "
                           "Full tables: `tables/configs.csv`, `tables/trials.csv`."))
    _table_with_common(document, analysis.configs, factors)
    if analysis.notes:
        document.add(Paragraph("Notes on this run's data:"), Bullets(analysis.notes))
    document.add(Heading(3, "Best configuration under the p99 budget"))
    _budget_section(document, analysis, budget, transfers)

    _reactive_sections(document, analysis, factors)

    document.add(Heading(2, SECTION_VALIDITY))
    _validity_section(document, analysis, factors)

    document.add(Heading(2, SECTION_THREATS))
    document.add(Bullets(_threats(analysis)))

    document.add(Heading(2, SECTION_APPENDIX))
    _appendix(document, analysis)
    return document


def _reactive_sections(document: ReportDocument, analysis: RunAnalysis, factors: list[str]) -> None:
    """Possible worlds (an A/B test's arms, when the run has one) and the reactive qualities."""
    from poochlab.experiments.analysis.reactive import possible_worlds_table, reactive_qualities

    kept = set(analysis.trials["trial_id"]) if "trial_id" in analysis.trials else set()
    records = [r for r in analysis.run.trials if r.trial_id in kept]  # those the analysis could read
    worlds = possible_worlds_table(records, factors)
    if len(worlds):
        document.add(Heading(2, SECTION_WORLDS))
        excluded = int(worlds["excluded (altered)"].sum())
        document.add(Paragraph(
            "An online A/B test: each request went to one arm (the stable or canary version, pinned by version "
            "label, or the historical average), drawn with a seeded generator. Per model type, over the valid "
            "trials' result windows: pupdates answered and scored against their known likes, the mean known likes "
            "per pupdate, the mean absolute error of the predicted likes (MAE), and latency from the arm's merged "
            f"histograms. {excluded} answered pupdates were excluded from the error: the workload had altered them "
            "(an extra hashtag to keep cache keys unique), so their known likes no longer match their inputs."))
        document.add(Table(worlds.drop(columns=["arm"])))
    document.add(Heading(2, SECTION_REACTIVE))
    document.add(Paragraph("The four qualities of a reactive system, each with this run's numbers (or \"not "
                           "measured in this run\" when the run has no trial that measures it)."))
    document.add(Bullets(reactive_qualities(records, factors)))


def _validity_section(document: ReportDocument, analysis: RunAnalysis, factors: list[str]) -> None:
    manifest = analysis.run.manifest
    configs = analysis.configs
    document.add(Paragraph("Validity judges the instrument: a trial whose load generator could not send on time "
                           "(generator-limited), whose cache failed too often, that recorded nothing or that crashed "
                           "gives no numbers. A server that fell behind a load the generator delivered on time is "
                           "valid: that is a finding."))
    document.add(Paragraph(validity_headline(tables_of(analysis, None))))
    limit = calibration_sentence(manifest)
    if limit is not None:
        document.add(Heading(3, "The load this machine could drive"))
        document.add(Paragraph(limit + " Every planned rate was at or below what each client path was measured to "
                               "send validly; the server's capacities count the generator's and Redis's share of "
                               "the CPUs."))
        measured = calibration_table(manifest)
        if measured is not None:
            document.add(Table(measured))
    without = configs[configs["valid_trials"] == 0]
    if len(without):
        labels, common = short_labels(without, factors)
        document.add(Paragraph("Configurations without a valid trial (no numbers; left out of the tables, figures, "
                               "effects, budget and Pareto front)" + (f"; all at {common}" if common else "") + ":"))
        document.add(Table(pd.DataFrame({
            "configuration": labels.tolist(),
            "trials": [int(t) for t in without["invalid_trials"]],
            "why": [str(k).replace("_", "-") for k in without["invalid_kinds"]],
            "reasons": list(without["validity_reasons"]),
        })))
    overloaded = configs[configs.get("server_overloaded_trials", pd.Series(0, index=configs.index)) > 0]
    if len(overloaded):
        document.add(Paragraph(f"Server overloaded (valid; see the findings): {_count(len(overloaded), 'configuration')}: "
                               + "; ".join(f"{r['label']} ({r['validity_findings'] or 'no detail recorded'})"
                                           for _, r in overloaded.iterrows())))
    document.add(Heading(3, "The load generator's own floor"))
    floors = floor_table(manifest, analysis.run.path)
    if floors is None:
        document.add(Paragraph(
            "The manifest records no generator floor: latencies cannot be separated from the load generator's own "
            "overhead. Measure it against an echo server before trusting sub-millisecond differences."))
    else:
        document.add(Paragraph(
            "The load generator's own latency against an echo server (a server that does nothing), for each client "
            "path and load of this run: no measured latency can be smaller, and differences of this size are the "
            "generator's, not the server's."))
        document.add(Table(floors))
        lowest_p50 = floor_p50_ms(floors)
        below = configs[configs["p50_ms"] < 2 * lowest_p50] if lowest_p50 == lowest_p50 else []
        if len(below):
            document.add(Paragraph(
                f"{_count(len(below), 'configuration')} have a p50 less than twice the generator's floor "
                f"({format_number(lowest_p50)} ms): much of their latency is the instrument's."))
    document.add(Heading(3, "Validity warnings"))
    document.add(Bullets(analysis.warnings or ["none: every trial was valid and every trial file readable"]))


def _cpus_awake(state: Any) -> str:
    """Whether the run held the CPUs awake ([load] cpus_awake), as its manifest says."""
    if not isinstance(state, dict):
        return "not recorded (idle CPUs may have halted)"
    if state.get("held"):
        return "kept awake (/dev/cpu_dma_latency held at 0: no host wake-ups in the latencies)"
    return str(state.get("detail", "may halt"))


def _appendix(document: ReportDocument, analysis: RunAnalysis) -> None:
    run = analysis.run
    manifest = run.manifest
    spec = manifest.get("spec") or {}
    platform = manifest.get("platform") or {}
    document.add(Heading(3, "Setup"))
    document.add(Bullets([
        f"Hardware: {platform.get('cpu_model', 'not recorded')}, {platform.get('cores', '?')} cores, kernel {platform.get('kernel', 'not recorded')}",
        f"Python {manifest.get('python', 'not recorded')}",
        f"Server kind: {manifest.get('server_kind', 'not recorded')}",
        f"Placement: {_placement(analysis)}",
        f"Idle CPUs: {_cpus_awake(manifest.get('cpus_awake'))}",
        f"Design: {spec.get('design', 'not recorded')}, {spec.get('repetitions', '?')} repetitions, "
        f"{len(analysis.configs)} configurations, {len(analysis.trials)} trials",
    ]))
    commands = _server_commands(manifest.get("server_commands"))
    document.add(Paragraph("Server command lines:"), Bullets(commands or ["not recorded"]))
    versions = manifest.get("versions") or {}
    if versions:
        document.add(Table(pd.DataFrame({"package": list(versions), "version": [str(v) for v in versions.values()]})))

    document.add(Heading(3, "Variables"))
    independent = []
    for name in analysis.factors:
        values = list(dict.fromkeys(analysis.trials[name].tolist())) if name in analysis.trials else []
        note = "" if name in analysis.varied else " (one value in this run)"
        if name in analysis.aliases:
            note = f" (moves in lockstep with {analysis.aliases[name]})"
        independent.append(f"{name}: {', '.join(map(str, values))}{note}")
    document.add(Paragraph("Independent variables (factors):"), Bullets(independent))
    document.add(Paragraph("Dependent variables:"), Bullets([
        "latency percentiles p50, p90, p95, p99, p99.9 and maximum (ms), from merged HDR histograms of the stable windows",
        "achieved throughput (requests/s), error rate, fallback rate, cache hit ratio and cache errors by reason",
        "server queue and compute time (ms), client encode/decode time, server CPU, energy",
    ]))
    controls = run.controls()
    document.add(Paragraph("Controls held fixed:"),
                 Bullets([f"{k}: {_format_value(v)}" for k, v in controls.items()] or ["none listed in the spec"]))

    document.add(Heading(3, "Provenance"))
    git = manifest.get("git") or {}
    document.add(Bullets([
        f"Run id: {run.run_id}; spec: {manifest.get('spec_path', 'not recorded')}",
        f"Measured from {manifest.get('started_at', '?')} to {manifest.get('ended_at', '?')}",
        f"Code: commit {git.get('commit', 'not recorded')}" + (" (working tree had uncommitted changes)" if git.get("dirty") else ""),
        f"Seeds: {_format_value(manifest.get('seeds', 'not recorded'))}; bootstrap seed {analysis.bootstrap_seed}, "
        f"{analysis.resamples} resamples per configuration",
        f"Tables: schema version {TABLE_SCHEMA_VERSION}; rebuilt from saved data by `poochlab report {run.path}` "
        f"at {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]))


def _budget_section(document: ReportDocument, analysis: RunAnalysis, budget: BudgetResult,
                    transfers: list[TransferResult]) -> None:
    configs = analysis.configs
    usable = configs[configs["has_valid"].astype(bool)] if "has_valid" in configs else configs
    front = usable[usable["pareto_optimal"].astype(bool)].sort_values("throughput_rps")
    if budget.budget_ms is None:
        document.add(Paragraph("No p99 budget was given (`--p99-budget-ms` or the manifest's `p99_budget_ms`), so "
                               "no configuration is selected; the Pareto-optimal configurations are listed instead."))
    elif budget.best is None:
        lowest = usable["p99_ms"].min() if len(usable) else math.nan
        document.add(Paragraph(f"No configuration meets the p99 budget of {budget.budget_ms:g} ms. The lowest valid p99 "
                               f"measured is {format_number(lowest)} ms."))
    else:
        best = budget.best
        document.add(Paragraph(
            f"Budget: p99 at most {budget.budget_ms:g} ms. {len(budget.meeting)} of {_count(len(usable), 'configuration')} "
            f"with valid trials meet it ({len(budget.surely_meeting)} with their whole 95% interval under it). "
            f"Highest throughput under the budget: **{best['label']}** with {format_number(best['throughput_rps'])} "
            f"requests/s at p99 {format_number(best['p99_ms'])} ms {_ci(best['p99_ci_low_ms'], best['p99_ci_high_ms'])}."
            + (f" {int(best['invalid_trials'])} of its {int(best['valid_trials'] + best['invalid_trials'])} trials were "
               "invalid and left out; its numbers come from the valid ones." if best["invalid_trials"] else "")))
        _table_with_common(document, budget.meeting, analysis.label_factors)
    if budget.budget_ms is not None:
        sustainable = sustainable_throughput(usable, analysis.varied, budget.budget_ms, analysis.with_role("load"))
        if len(sustainable):
            document.add(Paragraph("Highest sustainable throughput of each setting within the budget, over the "
                                   "load levels this sweep measured (configurations with valid trials only):"),
                         Table(sustainable))
    document.add(Paragraph("Pareto-optimal configurations (throughput against p99):"))
    document.add(Bullets([f"{r['label']}: {format_number(r['throughput_rps'])} requests/s, p99 {format_number(r['p99_ms'])} ms"
                          for _, r in front.iterrows()] or ["none"]))
    if not transfers:
        document.add(Paragraph("Transfer across model variants or workloads: this sweep varies neither "
                               "(model_variant, workload, models_served), so the question cannot be answered from it."))
    for transfer in transfers:
        criterion = "highest throughput within the budget" if budget.budget_ms is not None else "lowest p99"
        verdict = ("yes: the same setting is best for every value" if transfer.same_best and all(transfer.same_best)
                   else "no: the best setting changes" if transfer.same_best else "cannot tell (too few configurations)")
        document.add(Paragraph(f"Does the best configuration for one {transfer.factor} stay best for the other "
                               f"(best = {criterion}, compared within each load level)? **{verdict}**."))
        shown = transfer.rows.copy()
        for column in ("p99_ms", "throughput_rps"):
            shown[column] = shown[column].map(format_number)
        document.add(Table(shown))


def _threats(analysis: RunAnalysis) -> list[str]:
    manifest = analysis.run.manifest
    threats = [
        "On the lab's Python server, gRPC costs more than HTTP/REST for small payloads (about four times per call "
        "in our measurements), the reverse of TF Serving's C++ server, where gRPC is slightly cheaper. Protocol "
        "conclusions transfer to production only from runs on real TF Serving"
        + (f"; this run used server kind '{manifest.get('server_kind')}'." if manifest.get("server_kind") else "."),
        "The load generator, the server and Redis share one small machine (2 cores here); the generator's own "
        "latency (its floor, above) is part of every number, and noisy neighbours can add stalls.",
        "Closed-loop load (Locust users) suffers coordinated omission: requests not sent during a stall never "
        "show in the percentiles. Open-loop runs measure from the scheduled send time instead.",
        "A latency runs from the request's send (its scheduled time in an open loop) to the answer's arrival, "
        "as wrk and k6 count it: the client's own encoding and decoding (JSON or protobuf) lie outside it, shown "
        "in the latency breakdown; an application that decodes answers in Python adds them to what it sees.",
        "Cache results depend on the hit ratio each trial achieved (shown in the tables); a different request mix "
        "gives a different ratio and different latencies.",
        "Confidence intervals cover sampling variation within this machine and these dates only; a different "
        "machine, versions or time can shift every number (use `poochlab compare`, which warns about that).",
    ]
    if (analysis.configs["repetitions"] <= 1).any():
        threats.append("Some configurations have one repetition: their intervals reflect windows of one run only.")
    if set(analysis.trials["energy_method"]) - {"rapl", ""}:
        threats.append("Energy is estimated from CPU time, not measured (no RAPL counters).")
    return threats
