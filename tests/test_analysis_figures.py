"""The report's figures, read as matplotlib objects: scales, lines, markers and layout, never pixels."""

from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from poochlab.experiments.analysis.figures import (
    FIGURES,
    plot_latency_breakdown,
    plot_latency_vs_throughput,
    plot_effects,
    plot_p99_by_factor,
    plot_pareto_front,
    plot_percentile_spectrum,
)
from poochlab.experiments.analysis.tables import Tables

matplotlib.use("Agg")

FACTORS = {"protocol": ["grpc", "rest"], "cache": ["off", "on"], "load_level": ["high", "light"]}
OVERLOADED = {"protocol": "rest", "cache": "off", "load_level": "high"}
INVALID = {"protocol": "grpc", "cache": "on", "load_level": "high"}


def _tables(outlier_p99_ms: float) -> Tables:
    """Eight configurations of three two-level factors; one overloaded, one with an invalid trial."""
    rows = []
    for index, values in enumerate(itertools.product(*FACTORS.values())):
        factors = dict(zip(FACTORS, values))
        p99 = outlier_p99_ms if factors == OVERLOADED else 5.0 + index * 0.4
        high = factors["load_level"] == "high"
        rows.append({
            "config_id": f"c{index}", "label": ", ".join(f"{k}={v}" for k, v in factors.items()), **factors,
            "p50_ms": p99 / 3, "p99_ms": p99, "p50_ci_low_ms": p99 / 3.5, "p50_ci_high_ms": p99 / 2.5,
            "p99_ci_low_ms": p99 * 0.8, "p99_ci_high_ms": p99 * 1.25, "mean_ms": p99 / 2.5,
            "throughput_rps": (1200.0 if high else 400.0) + index, "breakdown_client_ms": 0.05,
            "breakdown_network_ms": p99 / 5, "breakdown_queue_ms": p99 / 10, "breakdown_compute_ms": 0.9,
            "valid_trials": 1 if factors == INVALID else 2, "invalid_trials": 1 if factors == INVALID else 0,
            "pareto_optimal": index == 1,
        })
    configs = pd.DataFrame(rows)
    trials = pd.DataFrame({"trial_id": [f"r1-{c}" for c in configs["config_id"]], "config_id": configs["config_id"],
                           "repetition": 1, "valid": configs["invalid_trials"] == 0, "stable": True})
    windows = pd.DataFrame([
        {"trial_id": f"r1-{c['config_id']}", "config_id": c["config_id"], "repetition": 1, "window": w,
         "start_s": 2.0 * w, "duration_s": 2.0, "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"], "merged": w > 0}
        for _, c in configs.iterrows() for w in range(3)])
    spectrum = pd.DataFrame([
        {"config_id": c["config_id"], "x": x, "latency_ms": latency}
        for _, c in configs.iterrows() for x, latency in ((2.0, c["p50_ms"]), (100.0, c["p99_ms"]), (1e4, c["p99_ms"] * 1.1))])
    return Tables(trials, configs, windows, spectrum, list(FACTORS), list(FACTORS), budget_ms=25.0,
                  effects=_effects())


# Hand-made effects: protocol's pairs differ by +2 and +4 ms (mean +3, interval excludes zero);
# cache's by -1 and +1 (mean 0, interval includes zero).
EFFECT_PAIRS = {"protocol": [("cache=off", 2.0, (1.0, 3.0)), ("cache=on", 4.0, (3.0, 5.0))],
                "cache": [("protocol=grpc", -1.0, (-2.0, 0.0)), ("protocol=rest", 1.0, (0.0, 2.0))]}
EFFECT_SUMMARY = {"protocol": (3.0, (2.0, 4.0), "increases"), "cache": (0.0, (-1.0, 1.0), "no measurable effect")}


def _effects() -> pd.DataFrame:
    rows = []
    for factor, pairs in EFFECT_PAIRS.items():
        mean, (low, high), verdict = EFFECT_SUMMARY[factor]
        rows.append({"kind": "overall", "factor": factor, "baseline": "a", "level": "b", "other": "mean over 2 settings",
                     "metric": "p99", "difference": mean, "difference_ci_low": low, "difference_ci_high": high,
                     "pairs": 2, "verdict": verdict})
        for other, difference, (low, high) in pairs:
            rows.append({"kind": "pair", "factor": factor, "baseline": "a", "level": "b", "other": other, "metric": "p99",
                         "difference": difference, "difference_ci_low": low, "difference_ci_high": high, "pairs": 1,
                         "verdict": "increases" if low > 0 else "decreases" if high < 0 else "no measurable effect"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def wide() -> Tables:
    return _tables(outlier_p99_ms=500.0)  # 100x the others: must not squash them


@pytest.fixture(scope="module")
def narrow() -> Tables:
    return _tables(outlier_p99_ms=8.0)


def _data_axes(figure):
    return [axis for axis in figure.axes if axis.get_visible()]


def _markers(axis) -> list[Line2D]:
    return [line for line in axis.get_lines() if line.get_marker() not in (None, "None", "") and line.get_linestyle() == "None"]


def _marked_values(axis, hollow: bool) -> set[float]:
    values = set()
    for line in _markers(axis):
        if (line.get_markerfacecolor() == "none") == hollow:
            values |= {round(float(v), 6) for v in line.get_ydata()}
    return values


@pytest.mark.parametrize("plot", [plot_p99_by_factor, plot_latency_vs_throughput, plot_pareto_front,
                                  plot_percentile_spectrum])
def test_latency_axis_is_logarithmic_exactly_when_the_data_span_more_than_ten_times(plot, wide, narrow):
    wide_figure, _ = plot(wide)
    narrow_figure, _ = plot(narrow)
    assert {axis.get_yscale() for axis in _data_axes(wide_figure)} == {"log"}
    assert {axis.get_yscale() for axis in _data_axes(narrow_figure)} == {"linear"}
    labels = [axis.get_ylabel() for axis in _data_axes(wide_figure) if axis.get_ylabel()]
    assert labels and all("(ms" in label and "log scale" in label for label in labels)


def test_breakdown_shows_shares_and_puts_the_means_on_a_log_axis_when_they_span_ten_times(wide, narrow):
    figure, caption = plot_latency_breakdown(wide)
    share_axis, total_axis = _data_axes(figure)
    assert share_axis.get_xlim() == (0, 100) and "%" in share_axis.get_xlabel()
    bar_ends = {}
    for patch in share_axis.patches:  # stacked shares of every configuration add up to 100 %
        row = round(patch.get_y() + patch.get_height() / 2)
        bar_ends[row] = max(bar_ends.get(row, 0), patch.get_x() + patch.get_width())
    assert len(bar_ends) == len(wide.configs) and np.allclose(list(bar_ends.values()), 100)
    assert total_axis.get_xscale() == "log" and "log axis" in caption
    assert plot_latency_breakdown(narrow)[0].axes[1].get_xscale() == "linear"
    invalid_label = wide.configs.loc[wide.configs["invalid_trials"] > 0, "label"].item()
    assert f"{invalid_label} (some trials invalid)" in [t.get_text() for t in share_axis.get_yticklabels()]


def test_p99_by_factor_joins_configurations_that_differ_only_in_the_panels_factor(wide):
    figure, caption = plot_p99_by_factor(wide)
    configs = wide.configs
    for axis, factor in zip(_data_axes(figure), FACTORS):
        assert axis.get_xlabel() == factor
        others = [f for f in FACTORS if f != factor]
        expected = {frozenset(round(v, 6) for v in group["p99_ms"]) for _, group in configs.groupby(others)}
        joined = [line for line in axis.get_lines() if line.get_linestyle() != "None"]
        assert {frozenset(round(float(v), 6) for v in line.get_ydata()) for line in joined} == expected
        legend = [text.get_text() for text in axis.get_legend().get_texts()]
        for _, group in configs.groupby(others):
            first = group.iloc[0]
            assert ", ".join(f"{f}={first[f]}" for f in others) in legend
    assert "only in that factor" in caption


def test_p99_by_factor_keeps_the_95_percent_intervals_as_error_bars(wide):
    figure, _ = plot_p99_by_factor(wide)
    expected = {(round(low, 6), round(high, 6)) for low, high in zip(wide.configs["p99_ci_low_ms"], wide.configs["p99_ci_high_ms"])}
    for axis in _data_axes(figure):
        drawn = {(round(float(min(s[:, 1])), 6), round(float(max(s[:, 1])), 6))
                 for collection in axis.collections if isinstance(collection, LineCollection)
                 for s in collection.get_segments()}
        assert drawn == expected


@pytest.mark.parametrize("plot", [plot_p99_by_factor, plot_latency_vs_throughput, plot_pareto_front])
def test_configurations_with_an_invalid_trial_are_drawn_hollow_and_the_caption_says_so(plot, wide):
    figure, caption = plot(wide)
    invalid = wide.configs[wide.configs["invalid_trials"] > 0]
    valid = wide.configs[wide.configs["invalid_trials"] == 0]
    columns = ["p99_ms", "p50_ms"] if plot is plot_latency_vs_throughput else ["p99_ms"]
    for axis in _data_axes(figure):
        hollow, filled = _marked_values(axis, hollow=True), _marked_values(axis, hollow=False)
        assert hollow == {round(float(v), 6) for c in columns for v in invalid[c]}
        assert {round(float(v), 6) for c in columns for v in valid[c]} <= filled
        assert not hollow & filled
        assert "≥1 invalid trial (left out)" in [t.get_text() for t in axis.get_legend().get_texts()]
    assert "Hollow markers are configurations with at least one invalid trial" in caption


@pytest.mark.parametrize("name", list(FIGURES))
def test_no_text_is_clipped_and_no_legend_covers_an_axis(name, wide):
    title, plot = FIGURES[name]
    figure, caption = plot(wide)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    drawn = figure.get_tightbbox(renderer)  # inches: every title, label, tick label and legend
    width, height = figure.get_size_inches()
    assert drawn.x0 >= -0.02 and drawn.y0 >= -0.02 and drawn.x1 <= width + 0.02 and drawn.y1 <= height + 0.02
    axes = _data_axes(figure)
    legends = [axis.get_legend() for axis in axes if axis.get_legend()] + list(figure.legends)
    assert legends, f"{name}: no legend"
    for legend, axis in itertools.product(legends, axes):
        assert not legend.get_window_extent(renderer).overlaps(axis.get_window_extent(renderer)), (name, axis.get_title())
    assert all(axis.get_xlabel() for axis in axes)
    assert figure.get_suptitle() or all(axis.get_title() for axis in axes)
    assert caption


def test_a_log_latency_axis_has_a_labelled_tick_below_the_fastest_point(wide):
    figure, _ = plot_p99_by_factor(wide)
    fastest = wide.configs["p99_ci_low_ms"].min()
    for axis in _data_axes(figure):
        low, _ = axis.get_ylim()
        labelled = [t for t in axis.get_yticks() if low <= t <= fastest]
        assert labelled and axis.yaxis.get_major_formatter()(labelled[-1]) == f"{labelled[-1]:g}"


def test_effects_figure_draws_each_pair_and_the_mean_with_intervals_and_zero_marked(wide):
    figure, caption = plot_effects(wide)
    axes = _data_axes(figure)
    assert [axis.get_title() for axis in axes] == [f"effect of {f} on p99" for f in EFFECT_PAIRS]
    for axis, (factor, pairs) in zip(axes, EFFECT_PAIRS.items()):
        # Zero is marked by a vertical line at x = 0.
        assert any(list(line.get_xdata()) == [0.0, 0.0] for line in axis.get_lines())
        points = {round(float(line.get_xdata()[0]), 6): line for line in axis.get_lines()
                  if line.get_marker() in ("o", "D")}
        mean, (low, high), verdict = EFFECT_SUMMARY[factor]
        assert set(points) == {mean} | {d for _, d, _ in pairs}
        assert points[mean].get_marker() == "D"
        # Interval excluding zero: red; including it: grey.
        assert points[mean].get_color() == ("C3" if verdict == "increases" else "0.45")
        spans = {tuple(round(float(v), 6) for v in segment[:, 0])
                 for collection in axis.collections for segment in collection.get_segments()}
        assert spans == {(low, high)} | {interval for _, _, interval in pairs}
        labels = [t.get_text() for t in axis.get_yticklabels()]
        assert labels[0].endswith("mean of 2") and len(labels) == 3
    assert "zero" in caption and "95%" in caption


def test_a_configuration_without_valid_trials_is_not_drawn_and_the_caption_says_so(wide):
    dead = wide.configs.iloc[:1].copy()
    dead["config_id"], dead["valid_trials"], dead["invalid_trials"] = "dead", 0, 2
    for column in ("p99_ms", "p50_ms", "mean_ms", "throughput_rps", "p99_ci_low_ms", "p99_ci_high_ms"):
        dead[column] = np.nan
    tables = Tables(wide.trials, pd.concat([wide.configs, dead], ignore_index=True), wide.windows, wide.spectrum,
                    wide.factors, wide.varied, wide.budget_ms, wide.effects)
    for plot in (plot_p99_by_factor, plot_latency_vs_throughput, plot_pareto_front, plot_latency_breakdown,
                 plot_percentile_spectrum):
        figure, caption = plot(tables)
        assert "1 configuration without a valid trial is left out (no numbers; listed under Validity)" in caption
        for axis in _data_axes(figure):
            assert not any(np.isnan(np.asarray(line.get_ydata(), float)).any() for line in _markers(axis))
