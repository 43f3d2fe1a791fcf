"""The report's figures, drawn from the tidy tables alone (the notebook calls these too).

Each ``plot_*`` function takes :class:`~poochlab.experiments.analysis.tables.Tables` and returns
the figure and its caption. Figures are built on ``matplotlib.figure.Figure`` directly (Agg,
no pyplot state), so they render the same in a CLI run, a test and a notebook kernel.

Conventions shared by every figure, because real runs have one overloaded configuration that is
tens of times slower than the rest:

- a latency axis turns logarithmic (ticks in plain ms) when its data span more than
  :data:`LOG_SPAN` times, so the fast configurations are not squashed under the slow one;
- a configuration's numbers come from its valid trials only; one without any valid trial is not
  drawn (the caption counts it), one with some invalid trials is drawn with hollow markers (or
  marked "(some trials invalid)" where it is a line or a bar), and the caption says so;
- legends sit outside the axes, so they never hide data.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Callable, Iterable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from poochlab.experiments.analysis.tables import Tables

PlotFunction = Callable[[Tables], tuple[Figure, str]]
MAX_TRIAL_PANELS = 12
MAX_LEGEND_ENTRIES = 20
LINE_STYLES = ("-", "--", ":", "-.")  # after ten colours, lines differ by style too
LOG_SPAN = 10.0  # max/min above which a latency axis is drawn on a log scale
HOLLOW = "none"  # marker face colour of configurations with an invalid trial
INVALID_TAG = " (some trials invalid)"
VALIDITY_NOTE = ("Hollow markers are configurations with at least one invalid trial, left out of their numbers "
                 "(which come from the valid trials); filled ones had only valid trials.")


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_svg(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def _factor_panels(tables: Tables) -> list[str]:
    return tables.label_factors[:6] or tables.factors[:1]


def _placeholder(title: str, message: str) -> tuple[Figure, str]:
    """A figure that says why there is nothing to draw, instead of failing the report."""
    figure = Figure(figsize=(6, 1.6), layout="constrained")
    axis = figure.subplots()
    axis.axis("off")
    axis.set_title(title)
    axis.text(0.5, 0.4, message, ha="center", va="center", wrap=True)
    return figure, message


def _grid(count: int, width: float = 4.2, height: float = 3.2, columns: int = 3,
          sharey: bool = False) -> tuple[Figure, list]:
    columns = min(count, columns)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel().tolist()
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


def _ci_values(frame: pd.DataFrame, column: str) -> list[pd.Series]:
    """The column and its interval bounds: everything an axis with error bars must show."""
    stem = column[:-3]
    return [frame[c] for c in (column, f"{stem}_ci_low_ms", f"{stem}_ci_high_ms") if c in frame]


def _invalid(configs: pd.DataFrame) -> pd.Series:
    """True for configurations with at least one invalid trial."""
    if "invalid_trials" not in configs:
        return pd.Series(False, index=configs.index)
    return configs["invalid_trials"].fillna(0).astype(float) > 0


def _label(row: pd.Series, invalid: bool) -> str:
    return str(row["label"]) + (INVALID_TAG if invalid else "")


def _positive(values: Iterable) -> np.ndarray:
    data = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.array([])
    return data[np.isfinite(data) & (data > 0)]


def _plain_ms(value: float, _position: object = None) -> str:
    return f"{value:g}"


def _tick_below(value: float) -> float:
    """The largest 1-2-5 step (..., 0.5, 1, 2, 5, 10, ...) at or below ``value``: a labelled log tick."""
    decade = 10.0 ** math.floor(math.log10(value))
    return max(step * decade for step in (1.0, 2.0, 5.0) if step * decade <= value * (1 + 1e-9))


def _scale_axis(axis: Axes, which: str, values: Iterable, name: str) -> bool:
    """Label the axis ``name`` and make it logarithmic when ``values`` span more than LOG_SPAN times.

    Log ticks are written as plain numbers (2, 5, 10, 20 ms ...), not powers of ten, so a reader
    can read a latency off the axis. Returns whether the axis is logarithmic.
    """
    data = _positive(list(values))
    use_log = data.size > 1 and data.max() / data.min() > LOG_SPAN
    target = axis.yaxis if which == "y" else axis.xaxis
    if use_log:
        (axis.set_yscale if which == "y" else axis.set_xscale)("log")
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(_plain_ms))
        target.set_minor_formatter(NullFormatter())
        # Start the axis at a labelled tick, so the fastest points do not sit on an unlabelled edge.
        low, high = axis.get_ylim() if which == "y" else axis.get_xlim()
        (axis.set_ylim if which == "y" else axis.set_xlim)(min(low, _tick_below(data.min())), high)
        name += ", log scale"
    (axis.set_ylabel if which == "y" else axis.set_xlabel)(name)
    return use_log


def _markers(axis: Axes, x: Iterable, y: Iterable, invalid: Iterable[bool], color: str,
             marker: str = "o", size: float = 5, zorder: float = 3) -> None:
    """Points at (x, y): filled where every trial was valid, hollow where one was not."""
    x, y, invalid = np.asarray(list(x), float), np.asarray(list(y), float), np.asarray(list(invalid), bool)
    for hollow in (False, True):
        chosen = invalid == hollow
        if chosen.any():
            axis.plot(x[chosen], y[chosen], linestyle="none", marker=marker, markersize=size, color=color,
                      markeredgecolor=color, markerfacecolor=HOLLOW if hollow else color, zorder=zorder)


def _validity_handles(filled: str = "all trials valid", hollow: str = "≥1 invalid trial (left out)",
                      color: str = "0.3") -> list[Line2D]:
    """Legend entries explaining filled and hollow markers (by default: trial validity)."""
    return [Line2D([], [], linestyle="none", marker="o", color=color, label=filled),
            Line2D([], [], linestyle="none", marker="o", color=color, markerfacecolor=HOLLOW, label=hollow)]


def _outside_legend(axis: Axes, handles: list, fontsize: float = 7, title: str | None = None) -> None:
    """A legend to the right of the axis: it never covers data (constrained layout makes room)."""
    axis.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                fontsize=fontsize, title=title, title_fontsize=fontsize, frameon=False)


def _other_settings(configs: pd.DataFrame, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Configurations grouped by their values of ``others``: within a group only the rest differ."""
    if not others:
        return [("all configurations", configs)]
    groups = []
    for key, group in configs.groupby(others, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        groups.append((", ".join(f"{n}={v}" for n, v in zip(others, key)), group))
    return groups


def _style(index: int) -> tuple[str, str]:
    return f"C{index % 10}", LINE_STYLES[(index // 10) % len(LINE_STYLES)]


def plot_p99_by_factor(tables: Tables) -> tuple[Figure, str]:
    configs = tables.configs.dropna(subset=["p99_ms"])
    panels = _factor_panels(tables)
    if not panels or configs.empty:
        return _placeholder("p99 latency by factor", "No factor or no measured configuration to compare.")
    figure, axes = _grid(len(panels), width=7.0, height=3.6, columns=2)
    invalid = _invalid(configs)
    latencies = _ci_values(configs, "p99_ms")  # every panel shows every configuration
    truncated = False
    for axis, factor in zip(axes, panels):
        levels = _levels(configs[factor])
        position = {level: index for index, level in enumerate(levels)}
        others = [f for f in tables.label_factors if f != factor]
        groups = _other_settings(configs[configs[factor].isin(levels)], others)
        # Each group's points sit slightly apart so their error bars do not hide each other.
        offsets = np.linspace(-0.18, 0.18, len(groups)) if len(groups) > 1 else np.zeros(1)
        handles = []
        for index, ((label, group), offset) in enumerate(zip(groups, offsets)):
            group = group.assign(_x=group[factor].map(position) + offset).sort_values("_x")
            color, style = _style(index)
            line, = axis.plot(group["_x"], group["p99_ms"], linestyle=style, color=color, linewidth=1.2, alpha=0.8,
                              label=label)
            axis.errorbar(group["_x"], group["p99_ms"], yerr=_ci_errors(group, "p99_ms"), fmt="none",
                          ecolor=color, elinewidth=1, capsize=2, alpha=0.8)
            _markers(axis, group["_x"], group["p99_ms"], invalid[group.index], color)
            if index < MAX_LEGEND_ENTRIES:
                handles.append(line)
        truncated |= len(groups) > MAX_LEGEND_ENTRIES
        axis.set_xticks(range(len(levels)), [str(v) for v in levels])
        axis.set_xlim(-0.5, len(levels) - 0.5)
        axis.set_xlabel(factor)
        _scale_axis(axis, "y", latencies, "p99 latency (ms)")
        axis.set_title(f"p99 by {factor}")
        axis.grid(axis="y", alpha=0.3, which="major")
        _outside_legend(axis, handles + _validity_handles(),
                        title=f"other factors ({', '.join(others)})" if others else None, fontsize=6.5)
    figure.suptitle("p99 latency of every configuration: lines join configurations that differ in one factor only")
    caption = (
        f"Interaction plot of the merged p99 latency (ms) of each of the {len(configs)} configurations. Each panel "
        "puts the configurations at their value of one factor; a line joins configurations that differ only in that "
        "factor (the legend names the other factors' values), so a line's slope is that factor's effect at that "
        "setting and non-parallel lines show an interaction. Error bars are 95% block-bootstrap intervals "
        f"(windows within repetitions, and repetitions). {VALIDITY_NOTE} A latency axis spanning more than "
        f"{LOG_SPAN:g}x is logarithmic."
        + (f" Only the first {MAX_LEGEND_ENTRIES} lines of a panel are named." if truncated else "")
        + _omitted_note(tables)
    )
    return figure, caption


def _trial_title(trial: pd.Series | None, trial_id: str, label: str) -> str:
    flags = []
    if trial is not None and not bool(trial.get("valid", True)):
        flags.append("INVALID")
    if trial is not None and not bool(trial.get("stable", True)):
        flags.append("unstable")
    head = trial_id + (f" ({', '.join(flags)})" if flags else "")
    return head + "\n" + textwrap.fill(label, width=48)


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
    figure, axes = _grid(len(chosen), width=3.8, height=2.9)
    labels = tables.configs.set_index("config_id")["label"]
    by_trial = trials.drop_duplicates("trial_id").set_index("trial_id")
    for axis, trial_id in zip(axes, chosen):
        rows = windows[windows["trial_id"] == trial_id].sort_values("window")
        middle = rows["start_s"] + rows["duration_s"] / 2
        merged = rows["merged"].astype(bool).to_numpy()
        for column, color in (("p50_ms", "C0"), ("p99_ms", "C3")):
            axis.plot(middle, rows[column], "-", color=color, alpha=0.6)
            # Hollow here means "window left out of the result", as the legend says.
            _markers(axis, middle, rows[column], ~merged, color, size=4)
        config_id = rows["config_id"].iloc[0]
        trial = by_trial.loc[trial_id] if trial_id in by_trial.index else None
        axis.set_title(_trial_title(trial, trial_id, str(labels.get(config_id, config_id))), fontsize=7)
        axis.set_xlabel("time in measurement (s)")
        if not _scale_axis(axis, "y", [rows["p50_ms"], rows["p99_ms"]], "latency (ms)"):
            axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    handles = [Line2D([], [], color="C0", marker="o", label="p50 per window"),
               Line2D([], [], color="C3", marker="o", label="p99 per window"),
               *_validity_handles("window merged into the result", "window left out (not stable)")]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    figure.suptitle("Latency over time within trials (per measurement window)")
    caption = (
        f"p50 (blue) and p99 (red) latency (ms) of each measurement window against time since measurement began "
        f"(s), for {len(chosen)} trials (invalid or unstable ones first, marked so in their titles, then the first "
        "repetition of each configuration). Filled markers are windows merged into the result, hollow ones were "
        f"left out; a rising line is drift, a lone spike a stall. A panel whose latencies span more than {LOG_SPAN:g}x "
        "has a log axis."
    )
    return figure, caption


def plot_latency_vs_throughput(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(11, 5.2), layout="constrained")
    axis = figure.subplots()
    configs = tables.configs.dropna(subset=["p99_ms"])
    # One curve per setting of the other factors: its points differ only in load factors.
    groups = _other_settings(configs, [f for f in tables.varied if f not in tables.load_factors])
    invalid = _invalid(configs)
    handles = []
    for index, (label, group) in enumerate(groups):
        group = group.sort_values("throughput_rps")
        color, _ = _style(index)
        line, = axis.plot(group["throughput_rps"], group["p99_ms"], "-", color=color, label=label)
        axis.plot(group["throughput_rps"], group["p50_ms"], "--", color=color, alpha=0.5)
        _markers(axis, group["throughput_rps"], group["p99_ms"], invalid[group.index], color)
        _markers(axis, group["throughput_rps"], group["p50_ms"], invalid[group.index], color, marker="s", size=4)
        if index < MAX_LEGEND_ENTRIES:
            handles.append(line)
    axis.set_xlabel("achieved throughput (requests/s)")
    _scale_axis(axis, "y", [configs["p99_ms"], configs["p50_ms"]], "latency (ms): p99 solid, p50 dashed")
    axis.set_title("Latency against achieved throughput")
    axis.grid(alpha=0.3)
    kinds = [Line2D([], [], color="0.3", marker="o", label="p99"),
             Line2D([], [], color="0.3", marker="s", linestyle="--", alpha=0.6, label="p50")]
    _outside_legend(axis, handles + kinds + _validity_handles())
    load = tables.load_factors
    caption = (
        "p99 (solid, circles) and p50 (dashed, squares) latency in ms against the throughput each configuration "
        "achieved (requests/s); "
        + (f"each line joins the load levels ({', '.join(load)}) of one setting of the other factors."
           if load else "no load factor varies in this run, so each setting is a single point.")
        + f" {VALIDITY_NOTE} The latency axis is logarithmic when the latencies span more than {LOG_SPAN:g}x."
        + (f" Only the first {MAX_LEGEND_ENTRIES} settings are named in the legend." if len(groups) > MAX_LEGEND_ENTRIES else "")
        + _omitted_note(tables)
    )
    return figure, caption


def plot_percentile_spectrum(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(11, 5.2), layout="constrained")
    axis = figure.subplots()
    configs = tables.configs.set_index("config_id")
    invalid = _invalid(configs)
    ids = list(dict.fromkeys(tables.spectrum["config_id"]))
    handles = []
    for index, config_id in enumerate(ids):
        rows = tables.spectrum[tables.spectrum["config_id"] == config_id]
        color, style = _style(index)
        is_invalid = bool(invalid.get(config_id, False))
        label = _label(configs.loc[config_id], is_invalid) if config_id in configs.index else str(config_id)
        line, = axis.plot(rows["x"], rows["latency_ms"], style, color=color, label=label)
        if index < MAX_LEGEND_ENTRIES:
            handles.append(line)
    axis.set_xscale("log")
    ticks = [2, 10, 100, 1000, 10000, 100000]
    axis.set_xticks(ticks, ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    axis.set_xlabel("percentile (log scale of 1/(1-p))")
    _scale_axis(axis, "y", [tables.spectrum["latency_ms"]], "latency (ms)")
    axis.set_title("Percentile spectrum per configuration")
    axis.grid(alpha=0.3, which="major")
    if handles:
        _outside_legend(axis, handles)
    caption = (
        "Latency (ms) at every percentile of each configuration's merged histogram, on a log axis of 1/(1-p) "
        "so the tail is spread out; beyond 1/(1-p) of about the number of requests a percentile is the maximum. "
        f"The latency axis is logarithmic when it spans more than {LOG_SPAN:g}x. \"(some trials invalid)\" in the "
        "legend marks configurations with at least one invalid trial, left out of their numbers."
        + (f" Only the first {MAX_LEGEND_ENTRIES} configurations are named." if len(ids) > MAX_LEGEND_ENTRIES else "")
        + _omitted_note(tables)
    )
    return figure, caption


def plot_pareto_front(tables: Tables) -> tuple[Figure, str]:
    figure = Figure(figsize=(11, 5.2), layout="constrained")
    axis = figure.subplots()
    configs = tables.configs.dropna(subset=["p99_ms", "throughput_rps"])
    invalid = _invalid(configs)
    front = configs[configs["pareto_optimal"].astype(bool)].sort_values("throughput_rps")
    axis.errorbar(configs["throughput_rps"], configs["p99_ms"], yerr=_ci_errors(configs, "p99_ms"),
                  fmt="none", ecolor="0.6", capsize=2)
    _markers(axis, configs["throughput_rps"], configs["p99_ms"], invalid, "0.5")
    axis.plot(front["throughput_rps"], front["p99_ms"], "-", color="C3", zorder=4)
    _markers(axis, front["throughput_rps"], front["p99_ms"], invalid[front.index], "C3", marker="D", size=6, zorder=5)
    handles = [Line2D([], [], color="0.5", marker="o", label="configuration (95% CI)"),
               Line2D([], [], color="C3", marker="D", label="Pareto front")]
    # Numbers next to the front's points, names in the legend: long labels would overlap on the plot.
    for number, (row_index, row) in enumerate(front.iterrows(), start=1):
        axis.annotate(str(number), (row["throughput_rps"], row["p99_ms"]), fontsize=8, color="C3",
                      xytext=(5, -10), textcoords="offset points")
        handles.append(Line2D([], [], linestyle="none", label=f"{number}: {_label(row, bool(invalid[row_index]))}"))
    if tables.budget_ms is not None:
        axis.axhline(tables.budget_ms, color="C2", linestyle=":")
        handles.append(Line2D([], [], color="C2", linestyle=":", label=f"p99 budget {tables.budget_ms:g} ms"))
    axis.set_xlabel("achieved throughput (requests/s)")
    budget = [tables.budget_ms] if tables.budget_ms is not None else []
    _scale_axis(axis, "y", _ci_values(configs, "p99_ms") + [budget], "p99 latency (ms)")
    axis.set_title("Throughput against p99: Pareto-optimal configurations")
    axis.grid(alpha=0.3)
    _outside_legend(axis, handles + _validity_handles())
    caption = (
        f"Each configuration's throughput (requests/s) and merged p99 (ms) with its 95% interval; the {len(front)} "
        "configurations joined in red are Pareto-optimal (no other has both higher throughput and lower p99), "
        "numbered as in the legend."
        + (f" The dotted line is the p99 budget of {tables.budget_ms:g} ms." if tables.budget_ms is not None else "")
        + f" {VALIDITY_NOTE} The p99 axis is logarithmic when it spans more than {LOG_SPAN:g}x."
        + _omitted_note(tables)
    )
    return figure, caption


BREAKDOWN_PARTS = (
    ("breakdown_client_ms", "client encode + decode"),
    ("breakdown_network_ms", "network and other"),
    ("breakdown_queue_ms", "server queue"),
    ("breakdown_compute_ms", "server compute"),
)


def plot_latency_breakdown(tables: Tables) -> tuple[Figure, str]:
    load = tables.load_factors
    configs = tables.configs.dropna(subset=["mean_ms"]).sort_values(load + ["mean_ms"])
    invalid = _invalid(configs)
    figure = Figure(figsize=(12, 1.6 + 0.3 * max(len(configs), 1)), layout="constrained")
    share_axis, total_axis = figure.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    rows = np.arange(len(configs))
    parts = np.vstack([configs[column].to_numpy(dtype=float) for column, _ in BREAKDOWN_PARTS])
    missing = [name for (_, name), values in zip(BREAKDOWN_PARTS, parts) if np.isnan(values).all()]
    parts = np.clip(np.nan_to_num(parts), 0, None)
    totals = parts.sum(axis=0)
    # Shares, not milliseconds: one overloaded configuration would otherwise flatten every other bar.
    shares = np.divide(parts, totals, out=np.zeros_like(parts), where=totals > 0) * 100
    left = np.zeros(len(configs))
    for index, ((_, name), share) in enumerate(zip(BREAKDOWN_PARTS, shares)):
        share_axis.barh(rows, share, left=left, color=f"C{index}", label=name)
        left += share
    labels = [_label(row, bool(bad)) for (_, row), bad in zip(configs.iterrows(), invalid)]
    share_axis.set_yticks(rows, labels, fontsize=7)
    share_axis.invert_yaxis()
    share_axis.set_xlim(0, 100)
    share_axis.set_xlabel("share of a request's mean time: latency plus the client's encode + decode (%)")
    share_axis.set_title("Where the time goes")
    means = configs["mean_ms"].to_numpy(dtype=float)
    total_axis.plot(means, rows, "o", color="0.3")
    total_axis.hlines(rows, 0, means, color="0.6", linewidth=1)
    for row, value in zip(rows, means):
        total_axis.annotate(f"{value:.3g}", (value, row), xytext=(4, 0), textcoords="offset points",
                            va="center", fontsize=7)
    if _scale_axis(total_axis, "x", [means], "mean latency per request (ms)"):
        total_axis.set_xlim(np.nanmin(means) / 1.5, np.nanmax(means) * 3)  # room for the numbers
    else:
        total_axis.set_xlim(0, np.nanmax(means) * 1.2 if len(means) else 1)
    total_axis.set_title("Mean latency")
    for axis in (share_axis, total_axis):
        axis.grid(axis="x", alpha=0.3)
    figure.legend(fontsize=8, loc="outside lower center", ncols=4, frameon=False)
    figure.suptitle("Latency breakdown: client, network, server queue, server compute")
    caption = (
        "Left: each configuration's mean time per request as shares (%): the client's own encode + decode "
        "(measured by the client; outside the latency, which runs from the request's send to the answer's "
        "arrival as wrk and k6 count it) and the mean latency split into server queue and compute (from the "
        "server's per-request timing, weighted by the share of requests the model answered, since cache hits "
        "and fallbacks never reach it) and what remains: network and server overhead outside the model. "
        "Right: the mean latency in ms"
        + (f" (log axis: the means span more than {LOG_SPAN:g}x)" if total_axis.get_xscale() == "log" else "")
        + ". Configurations are sorted "
        + (f"by {', '.join(load)}, then " if load else "")
        + "by mean latency; \"(some trials invalid)\" marks those with at least one invalid trial, left out of "
        "their numbers."
        + (f" Not recorded in this run, drawn as zero: {', '.join(missing)}." if missing else "")
        + _omitted_note(tables)
    )
    return figure, caption


def _omitted_note(tables: Tables) -> str:
    """A caption's note on configurations that have no valid trial and are therefore not drawn."""
    configs = tables.configs
    if "valid_trials" not in configs:
        return ""
    count = int((configs["valid_trials"] == 0).sum())
    if not count:
        return ""
    return (f" {count} configuration{'s' if count > 1 else ''} without a valid trial {'are' if count > 1 else 'is'} "
            "left out (no numbers; listed under Validity).")


def plot_effects(tables: Tables) -> tuple[Figure, str]:
    """Each factor's effect on p99: one panel per factor, one row per pair of configurations that
    differ only in it, the mean over pairs on top, 95% intervals, zero marked."""
    effects = tables.effects
    if effects is None or effects.empty:
        return _placeholder("Effect of each factor on p99", "No factor varies between configurations with valid "
                            "trials: no effect to estimate.")
    chosen = effects[(effects["metric"] == "p99") & effects["kind"].isin(["pair", "overall"])]
    factors = [f for f in dict.fromkeys(chosen["factor"]) if (chosen[(chosen["factor"] == f)]["pairs"] > 0).any()]
    if not factors:
        return _placeholder("Effect of each factor on p99", "No two configurations with valid trials differ in "
                            "only one factor: no effect to estimate.")
    panels = []
    for factor in factors[:6]:
        rows = chosen[chosen["factor"] == factor]
        ordered = []
        for level in dict.fromkeys(rows["level"]):
            at_level = rows[rows["level"] == level]
            ordered += [r for _, r in at_level[at_level["kind"] == "overall"].iterrows()]
            ordered += [r for _, r in at_level[at_level["kind"] == "pair"].iterrows()]
        panels.append((factor, ordered))
    tallest = max(len(rows) for _, rows in panels)
    figure, axes = _grid(len(panels), width=6.0, height=1.2 + 0.32 * tallest, columns=2)
    for axis, (factor, rows) in zip(axes, panels):
        positions = np.arange(len(rows))
        labels = []
        for position, row in zip(positions, rows):
            overall = row["kind"] == "overall"
            excludes = row["verdict"] in ("increases", "decreases")
            color = "C3" if excludes else "0.45"
            low, high = row["difference_ci_low"], row["difference_ci_high"]
            if not (math.isnan(low) or math.isnan(high)):
                axis.hlines(position, low, high, color=color, linewidth=2.5 if overall else 1.2)
            axis.plot([row["difference"]], [position], linestyle="none", marker="D" if overall else "o",
                      markersize=7 if overall else 4.5, color=color)
            if overall:
                labels.append(f"{row['level']} vs {row['baseline']}: mean of {int(row['pairs'])}")
            else:
                # Values only: the axis label names the factors once.
                values = [part.split("=", 1)[-1] for part in str(row["other"]).split(", ")]
                labels.append(textwrap.shorten(", ".join(values), width=40, placeholder="…"))
        axis.axvline(0.0, color="0.2", linewidth=1, linestyle="--")
        axis.set_yticks(positions, labels, fontsize=7)
        for tick, row in zip(axis.get_yticklabels(), rows):
            if row["kind"] == "overall":
                tick.set_fontweight("bold")
        axis.invert_yaxis()
        axis.set_xlabel(f"p99 difference (ms): {factor} value minus baseline")
        pair_rows = [r for r in rows if r["kind"] == "pair"]
        if pair_rows:
            names = [part.split("=", 1)[0] for part in str(pair_rows[0]["other"]).split(", ")]
            axis.set_ylabel("pair at " + ", ".join(names), fontsize=8)
        axis.set_title(f"effect of {factor} on p99")
        axis.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color="C3", marker="D", label="mean over pairs, interval excludes 0"),
               Line2D([], [], color="0.45", marker="D", label="mean over pairs, interval includes 0"),
               Line2D([], [], color="0.3", marker="o", linestyle="none", label="one pair (other factors' values named)"),
               Line2D([], [], color="0.2", linestyle="--", label="no effect (0)")]
    figure.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    figure.suptitle("Effect of each factor on p99: paired differences with 95% intervals")
    caption = (
        "Each panel is one factor. A row is one pair of configurations that differ only in that factor (the other "
        "factors' values name the row), both with valid trials: the difference of their merged p99 (ms), value "
        "minus the factor's baseline (its first value in the spec), with a 95% block-bootstrap interval "
        "(repetitions, then windows, of each configuration). The bold row with a diamond is the mean over the "
        "pairs. Red: the interval excludes zero (a measurable effect); grey: it includes zero. The dashed line is "
        "zero." + _omitted_note(tables)
        + (f" Only the first 6 of {len(factors)} factors are drawn." if len(factors) > 6 else "")
    )
    return figure, caption


# name -> (title, plotting function), in the report's order.
FIGURES: dict[str, tuple[str, PlotFunction]] = {
    "effects": ("Effect of each factor on p99", plot_effects),
    "p99_by_factor": ("p99 latency by factor", plot_p99_by_factor),
    "latency_vs_throughput": ("Latency against achieved throughput", plot_latency_vs_throughput),
    "pareto_front": ("Pareto front of throughput against p99", plot_pareto_front),
    "percentile_spectrum": ("Percentile spectrum", plot_percentile_spectrum),
    "latency_breakdown": ("Latency breakdown", plot_latency_breakdown),
    "latency_over_time": ("Latency over time within trials", plot_latency_over_time),
}
