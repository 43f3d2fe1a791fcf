"""The report's content as a list of blocks, rendered later to Markdown, HTML and a notebook.

Building the content once keeps the three formats saying the same thing. Every section the
course asks for is here: question, setup, variables, results with captioned figures, the
generator's floor, the best configuration under the budget, validity warnings, threats to
validity and provenance.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from poochlab.experiments.analysis.frontier import BudgetResult, TransferResult, sustainable_throughput
from poochlab.experiments.analysis.generator_floor import floor_p50_ms, floor_table
from poochlab.experiments.analysis.number_format import format_number
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


def results_table(configs: pd.DataFrame) -> pd.DataFrame:
    """The configuration table as the report shows it (ms, requests/s)."""
    rows = []
    for _, row in configs.sort_values("p99_ms").iterrows():
        rows.append({
            "configuration": row["label"],
            "reps": format_number(int(row["repetitions"])),
            "p50 ms [95% CI]": _with_ci(row["p50_ms"], row["p50_ci_low_ms"], row["p50_ci_high_ms"]),
            "p99 ms [95% CI]": _with_ci(row["p99_ms"], row["p99_ci_low_ms"], row["p99_ci_high_ms"]),
            # Closed loop only: p99 with HdrHistogram's correction for coordinated omission.
            "p99 corrected ms": format_number(row["p99_corrected_ms"]),
            "p99.9 ms": format_number(row["p99.9_ms"]),
            "max ms": format_number(row["max_ms"]),
            "throughput req/s": format_number(row["throughput_rps"]),
            "error rate": format_number(row["error_rate"]),
            "cache hit ratio": format_number(row["cache_hit_ratio"]),
            "energy mJ/request": format_number(row["energy_per_request_mj"]),
            "valid trials": f"{int(row['valid_trials'])}/{int(row['valid_trials'] + row['invalid_trials'])}",
        })
    table = pd.DataFrame(rows)
    # Columns no configuration has a value for (no cache, no energy) only add noise.
    return table[[c for c in table.columns if not (table[c] == "–").all()]] if len(table) else table


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
    placements = [t.resources["placement"] for t in analysis.run.trials if t.resources.get("placement")]
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


def build_document(
    analysis: RunAnalysis,
    budget: BudgetResult,
    transfers: list[TransferResult],
    figures: list[FigureBlock],
) -> ReportDocument:
    run = analysis.run
    manifest = run.manifest
    spec = manifest.get("spec") or {}
    document = ReportDocument(title=f"Latency report: {run.run_id}")

    document.add(Heading(2, "Question"))
    question = spec.get("question") or (
        f"How do {', '.join(analysis.varied) or 'the configured settings'} change the latency that users of the "
        "Pooch Predictor see (median and tail, with 95% confidence intervals), and which configuration sustains "
        "the most throughput within the p99 budget?")
    document.add(Paragraph(str(question)))

    platform = manifest.get("platform") or {}
    document.add(Heading(2, "Setup"))
    document.add(Bullets([
        f"Hardware: {platform.get('cpu_model', 'not recorded')}, {platform.get('cores', '?')} cores, kernel {platform.get('kernel', 'not recorded')}",
        f"Python {manifest.get('python', 'not recorded')}",
        f"Server kind: {manifest.get('server_kind', 'not recorded')}",
        f"Placement: {_placement(analysis)}",
        f"Design: {spec.get('design', 'not recorded')}, {spec.get('repetitions', '?')} repetitions, "
        f"{len(analysis.configs)} configurations, {len(analysis.trials)} trials",
    ]))
    commands = _server_commands(manifest.get("server_commands"))
    document.add(Paragraph("Server command lines:"), Bullets(commands or ["not recorded"]))
    versions = manifest.get("versions") or {}
    if versions:
        document.add(Table(pd.DataFrame({"package": list(versions), "version": [str(v) for v in versions.values()]})))

    document.add(Heading(2, "Variables"))
    independent = []
    for name in analysis.factors:
        values = list(dict.fromkeys(analysis.trials[name].tolist())) if name in analysis.trials else []
        independent.append(f"{name}: {', '.join(map(str, values))}" + ("" if name in analysis.varied else " (one value in this run)"))
    document.add(Paragraph("Independent variables (factors):"), Bullets(independent))
    document.add(Paragraph("Dependent variables:"), Bullets([
        "latency percentiles p50, p90, p95, p99, p99.9 and maximum (ms), from merged HDR histograms of the stable windows",
        "achieved throughput (requests/s), error rate, fallback rate, cache hit ratio",
        "server queue and compute time (ms), client encode/decode time, server CPU, energy",
    ]))
    controls = run.controls()
    document.add(Paragraph("Controls held fixed:"),
                 Bullets([f"{k}: {_format_value(v)}" for k, v in controls.items()] or ["none listed in the spec"]))

    document.add(Heading(2, "Results"))
    document.add(Paragraph("Per configuration, repetitions merged (histograms added, never percentiles averaged); "
                           "95% intervals from a block bootstrap over windows within repetitions and over repetitions. "
                           "Sorted by p99. Full tables: `tables/configs.csv`, `tables/trials.csv`."))
    document.add(Table(results_table(analysis.configs)))
    if analysis.notes:
        document.add(Paragraph("Notes on this run's data:"), Bullets(analysis.notes))
    for figure in figures:
        document.add(Heading(3, figure.title), figure)

    document.add(Heading(2, "The load generator's own floor"))
    floors = floor_table(manifest, run.path)
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
        below = analysis.configs[analysis.configs["p50_ms"] < 2 * lowest_p50] if lowest_p50 == lowest_p50 else []
        if len(below):
            document.add(Paragraph(
                f"{_count(len(below), 'configuration')} have a p50 less than twice the generator's floor "
                f"({format_number(lowest_p50)} ms): much of their latency is the instrument's."))

    document.add(Heading(2, "Best configuration under the p99 budget"))
    _budget_section(document, analysis, budget, transfers)

    document.add(Heading(2, "Validity warnings"))
    document.add(Bullets(analysis.warnings or ["none: every trial was valid and every trial file readable"]))

    document.add(Heading(2, "Threats to validity"))
    document.add(Bullets(_threats(analysis)))

    document.add(Heading(2, "Provenance"))
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
    return document


def _budget_section(document: ReportDocument, analysis: RunAnalysis, budget: BudgetResult,
                    transfers: list[TransferResult]) -> None:
    configs = analysis.configs
    front = configs[configs["pareto_optimal"].astype(bool)].sort_values("throughput_rps")
    if budget.budget_ms is None:
        document.add(Paragraph("No p99 budget was given (`--p99-budget-ms` or the manifest's `p99_budget_ms`), so "
                               "no configuration is selected; the Pareto-optimal configurations are listed instead."))
    elif budget.best is None:
        document.add(Paragraph(f"No configuration meets the p99 budget of {budget.budget_ms:g} ms. The lowest p99 "
                               f"measured is {format_number(configs['p99_ms'].min())} ms."))
    else:
        best = budget.best
        document.add(Paragraph(
            f"Budget: p99 at most {budget.budget_ms:g} ms. {len(budget.meeting)} of {_count(len(configs), 'configuration')} meet it "
            f"({len(budget.surely_meeting)} with their whole 95% interval under it). Highest throughput under the budget: "
            f"**{best['label']}** with {format_number(best['throughput_rps'])} requests/s at p99 "
            f"{format_number(best['p99_ms'])} ms {_ci(best['p99_ci_low_ms'], best['p99_ci_high_ms'])}."
            + (f" Caution: {int(best['invalid_trials'])} of its {int(best['valid_trials'] + best['invalid_trials'])} "
               "trials were invalid (see the validity warnings), and no configuration with only valid trials meets "
               "the budget." if best["invalid_trials"] else "")))
        document.add(Table(results_table(budget.meeting)))
    if budget.budget_ms is not None:
        sustainable = sustainable_throughput(configs, analysis.varied, budget.budget_ms)
        if len(sustainable):
            document.add(Paragraph("Highest sustainable throughput of each setting within the budget, over the "
                                   "load levels this sweep measured:"), Table(sustainable))
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
