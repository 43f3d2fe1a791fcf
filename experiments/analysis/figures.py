"""The report's figures, drawn from the tidy tables alone (the notebook calls these too).

Each ``plot_*`` function takes :class:`~poochlab.experiments.analysis.tables.Tables` and returns
the figure and its caption. Figures are built on ``matplotlib.figure.Figure`` directly (Agg,
no pyplot state), so they render the same in a CLI run, a test and a notebook kernel.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from poochlab.experiments.analysis.run_analysis import LOAD_FACTORS
from poochlab.experiments.analysis.tables import Tables

PlotFunction = Callable[[Tables], tuple[Figure, str]]
MAX_TRIAL_PANELS = 12
MAX_LEGEND_ENTRIES = 12
LINE_STYLES = ("-", "--", ":", "-.")  # after ten colours, lines differ by style too


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_svg(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def _factor_panels(tables: Tables) -> list[str]:
    return tables.varied[:6] or tables.factors[:1]


def _placeholder(title: str, message: str) -> tuple[Figure, str]:
    """A figure that says why there is nothing to draw, instead of failing the report."""
    figure = Figure(figsize=(6, 1.6), layout="constrained")
    axis = figure.subplots()
    axis.axis("off")
    axis.set_title(title)
    axis.text(0.5, 0.4, message, ha="center", va="center", wrap=True)
    return figure, message


def _grid(count: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _levels(series: pd.Series) -> list:
    values = list(dict.fromkeys(series.dropna().tolist()))
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _ci_errors(frame: pd.DataFrame, column: str) -> np.ndarray:
    low = (frame[column] - frame[f"{column[:-3]}_ci_low_ms"]).clip(lower=0).fillna(0)
    high = (frame[f"{column[:-3]}_ci_high_ms"] - frame[column]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def plot_p99_by_factor(tables: Tables) -> tuple[Figure, str]:
    configs = tables.configs.dropna(subset=["p99_ms"])
    panels = _factor_panels(tables)
    if not panels or configs.empty:
        return _placeholder("p99 latency by factor", "No factor or no measured configuration to compare.")
    figure, axes = _grid(len(panels))
    for axis, factor in zip(axes, panels):
        levels = _levels(configs[factor])
        for position, level in enumerate(levels):
            at_level = configs[configs[factor] == level]
            offsets = np.linspace(-0.3, 0.3, len(at_level)) if len(at_level) > 1 else np.zeros(1)
            axis.errorbar(position + offsets, at_level["p99_ms"], yerr=_ci_errors(at_level, "p99_ms"),
                          fmt="o", markersize=4, capsize=2, color=f"C{position % 10}")
        axis.set_xticks(range(len(levels)), [str(v) for v in levels])
        axis.set_xlabel(factor)
        axis.set_ylabel("p99 latency (ms)")
        axis.set_title(f"p99 by {factor}")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("p99 latency of every configuration, grouped by each factor")
    caption = (
        f"Merged p99 latency (ms) of each of the {len(configs)} configurations, placed at its value of each "
        "factor; error bars are 95% block-bootstrap intervals (windows within repetitions, and repetitions). "
        "Points at one value differ in the other factors."
    )
    return figure, caption


def plot_latency_over_time(tables: Tables) -> tuple[Figure, str]:
    windows = tables.windows
    trials = tables.trials
    if windows.empty:
        return _placeholder("Latency over time", "No trial recorded any measurement window.")
    # Problem trials first (invalid or never stable), then one repetition per configuration.
    order = trials.assign(problem=~trials["valid"] | ~trials["stable"]).sort_values(
        ["problem", "repetition", "config_id"], ascending=[False, True, True])
    chosen = [t for t in order["trial_id"] if t in set(windows["trial_id"])]
    chosen = list(dict.fromkeys(chosen))[:MAX_TRIAL_PANELS]
    figure, axes = _grid(len(chosen), width=3.6, height=2.6)
    labels = tables.configs.set_index("config_id")["label"]
    for axis, trial_id in zip(axes, chosen):
        rows = windows[windows["trial_id"] == trial_id].sort_values("window")
        middle = rows["start_s"] + rows["duration_s"] / 2
        for column, style, name in (("p50_ms", "C0", "p50"), ("p99_ms", "C3", "p99")):
            axis.plot(middle, rows[column], "-", color=style, alpha=0.6, label=name)
            merged = rows["merged"].astype(bool)
            axis.plot(middle[merged], rows[column][merged], "o", color=style, markersize=4)
            axis.plot(middle[~merged], rows[column][~merged], "o", color=style, markersize=4, markerfacecolor="white")
        config_id = rows["config_id"].iloc[0]
        label = str(labels.get(config_id, config_id))
        axis.set_title(f"{trial_id}\n{label[:60]}", fontsize=7)
        axis.set_xlabel("time in measurement (s)")
        axis.set_ylabel("latency (ms)")
        axis.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    figure.suptitle("Latency over time within trials (per measurement window)")
    caption = (
        f"p50 and p99 latency (ms) of each measurement window against time since measurement began, for "
        f"{len(chosen)} trials (invalid or unstable ones first, then the first repetition of each configuration). "
        "Filled markers are windows merged into the result (stable), hollow ones were left out; a rising line "
        "is drift, a lone spike a stall."
    )
    return figure, caption


def _setting_groups(tables: Tables) -> list[tuple[str, pd.DataFrame]]:
    """Configurations that differ only in load factors, as one curve each."""
    setting = [f for f in tables.varied if f not in LOAD_FACTORS]
    configs = tables.configs.dropna(subset=["p99_ms"])
    if not setting:
        return [("all configurations", configs)]
    groups = []
    for key, group in configs.groupby(setting, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        groups.append((", ".join(f"{n}={v}" for n, v in zip(setting, key)), group))
    return groups


def plot_latency_vs_throughput(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(8.5, 5), layout="constrained")
    axis = figure.subplots()
    groups = _setting_groups(tables)
    for index, (label, group) in enumerate(groups):
        group = group.sort_values("throughput_rps")
        color = f"C{index % 10}"
        axis.plot(group["throughput_rps"], group["p99_ms"], "o-", color=color,
                  label=label if index < MAX_LEGEND_ENTRIES else None)
        axis.plot(group["throughput_rps"], group["p50_ms"], "s--", color=color, alpha=0.5, markersize=4)
    axis.set_xlabel("achieved throughput (requests/s)")
    axis.set_ylabel("latency (ms): p99 solid, p50 dashed")
    axis.set_title("Latency against achieved throughput")
    axis.grid(alpha=0.3)
    if groups:
        axis.legend(fontsize=7, loc="best")
    load = [f for f in tables.varied if f in LOAD_FACTORS]
    caption = (
        "p99 (solid, circles) and p50 (dashed, squares) latency in ms against the throughput each configuration "
        "achieved (requests/s); "
        + (f"each line joins the load levels ({', '.join(load)}) of one setting of the other factors."
           if load else "no load factor varies in this run, so each setting is a single point.")
        + (f" Only the first {MAX_LEGEND_ENTRIES} settings are named in the legend." if len(groups) > MAX_LEGEND_ENTRIES else "")
    )
    return figure, caption


def plot_percentile_spectrum(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(8.5, 5), layout="constrained")
    axis = figure.subplots()
    labels = tables.configs.set_index("config_id")["label"]
    configs = list(dict.fromkeys(tables.spectrum["config_id"]))
    for index, config_id in enumerate(configs):
        rows = tables.spectrum[tables.spectrum["config_id"] == config_id]
        axis.plot(rows["x"], rows["latency_ms"], LINE_STYLES[(index // 10) % len(LINE_STYLES)], color=f"C{index % 10}",
                  label=str(labels.get(config_id, config_id))[:70] if index < MAX_LEGEND_ENTRIES else None)
    axis.set_xscale("log")
    ticks = [2, 10, 100, 1000, 10000, 100000]
    axis.set_xticks(ticks, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    axis.set_xlabel("percentile (log scale of 1/(1-p))")
    axis.set_ylabel("latency (ms)")
    axis.set_title("Percentile spectrum per configuration")
    axis.grid(alpha=0.3, which="both")
    if configs:
        axis.legend(fontsize=6, loc="upper left")
    caption = (
        "Latency (ms) at every percentile of each configuration's merged histogram, on a log axis of 1/(1-p) "
        "so the tail is spread out; beyond 1/(1-p) of about the number of requests a percentile is the maximum."
        + (f" Only the first {MAX_LEGEND_ENTRIES} configurations are named." if len(configs) > MAX_LEGEND_ENTRIES else "")
    )
    return figure, caption


def plot_pareto_front(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(8.5, 5), layout="constrained")
    axis = figure.subplots()
    configs = tables.configs.dropna(subset=["p99_ms", "throughput_rps"])
    front = configs[configs["pareto_optimal"].astype(bool)].sort_values("throughput_rps")
    axis.errorbar(configs["throughput_rps"], configs["p99_ms"], yerr=_ci_errors(configs, "p99_ms"),
                  fmt="o", color="0.6", markersize=4, capsize=2, label="configuration (95% CI)")
    axis.plot(front["throughput_rps"], front["p99_ms"], "D-", color="C3", label="Pareto front")
    for _, row in front.iterrows():
        axis.annotate(str(row["label"])[:50], (row["throughput_rps"], row["p99_ms"]), fontsize=6,
                      xytext=(4, 4), textcoords="offset points")
    if tables.budget_ms is not None:
        axis.axhline(tables.budget_ms, color="C2", linestyle=":", label=f"p99 budget {tables.budget_ms:g} ms")
    axis.set_xlabel("achieved throughput (requests/s)")
    axis.set_ylabel("p99 latency (ms)")
    axis.set_title("Throughput against p99: Pareto-optimal configurations")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    caption = (
        f"Each configuration's throughput (requests/s) and merged p99 (ms) with its 95% interval; the {len(front)} "
        "configurations joined in red are Pareto-optimal (no other has both higher throughput and lower p99)."
        + (f" The dotted line is the p99 budget of {tables.budget_ms:g} ms." if tables.budget_ms is not None else "")
    )
    return figure, caption


BREAKDOWN_PARTS = (
    ("breakdown_client_ms", "client encode + decode"),
    ("breakdown_network_ms", "network and other"),
    ("breakdown_queue_ms", "server queue"),
    ("breakdown_compute_ms", "server compute"),
)


def plot_latency_breakdown(tables: Tables) -> tuple[Figure, str]:
    configs = tables.configs.dropna(subset=["mean_ms"])
    figure = Figure(figsize=(8.5, 1.2 + 0.32 * max(len(configs), 1)), layout="constrained")
    axis = figure.subplots()
    left = np.zeros(len(configs))
    missing = []
    for index, (column, name) in enumerate(BREAKDOWN_PARTS):
        values = configs[column].to_numpy(dtype=float)
        if np.isnan(values).all():
            missing.append(name)
        values = np.nan_to_num(values)
        axis.barh(range(len(configs)), values, left=left, color=f"C{index}", label=name)
        left += values
    axis.set_yticks(range(len(configs)), [str(v)[:70] for v in configs["label"]], fontsize=6)
    axis.invert_yaxis()
    axis.set_xlabel("mean latency per request (ms)")
    axis.set_title("Where the time goes: client, network, server queue, server compute")
    figure.legend(fontsize=7, loc="outside lower center", ncols=4)
    caption = (
        "Mean latency per request (ms) of each configuration split into client encode + decode (measured by the "
        "client), server queue and compute (from the server's per-request timing, weighted by the share of "
        "requests the model answered, since cache hits and fallbacks never reach it) and what remains: network "
        "and server overhead outside the model."
        + (f" Not recorded in this run, drawn as zero: {', '.join(missing)}." if missing else "")
    )
    return figure, caption


def plot_main_effects(tables: Tables) -> tuple[Figure, str]:
    configs = tables.configs.dropna(subset=["p99_ms"])
    panels = _factor_panels(tables)
    if not panels or configs.empty:
        return _placeholder("Main effects on p99", "No factor or no measured configuration: no effect to estimate.")
    figure, axes = _grid(len(panels))
    grand = configs["p99_ms"].mean()
    for axis, factor in zip(axes, panels):
        levels = _levels(configs[factor])
        means = [configs[configs[factor] == level]["p99_ms"].mean() for level in levels]
        axis.plot(range(len(levels)), means, "o-", color="C0")
        axis.axhline(grand, color="0.5", linestyle="--", linewidth=1)
        axis.set_xticks(range(len(levels)), [str(v) for v in levels])
        axis.set_xlabel(factor)
        axis.set_ylabel("mean of config p99 (ms)")
        axis.set_title(f"main effect of {factor}")
        axis.grid(alpha=0.3)
    figure.suptitle("Main effect of each factor on p99")
    caption = (
        "Main effects: for each value of a factor, the mean p99 (ms) of the configurations at that value, "
        "against the grand mean (dashed). This averages configurations of a designed experiment to estimate an "
        "effect; it is not a latency percentile of any configuration."
    )
    return figure, caption


# name -> (title, plotting function), in the report's order.
FIGURES: dict[str, tuple[str, PlotFunction]] = {
    "p99_by_factor": ("p99 latency by factor", plot_p99_by_factor),
    "main_effects": ("Main effect of each factor on p99", plot_main_effects),
    "latency_vs_throughput": ("Latency against achieved throughput", plot_latency_vs_throughput),
    "pareto_front": ("Pareto front of throughput against p99", plot_pareto_front),
    "percentile_spectrum": ("Percentile spectrum", plot_percentile_spectrum),
    "latency_breakdown": ("Latency breakdown", plot_latency_breakdown),
    "latency_over_time": ("Latency over time within trials", plot_latency_over_time),
}
