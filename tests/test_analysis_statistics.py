"""Percentiles, confidence intervals, budget and Pareto front against known answers.

Expected values come from the distributions the synthetic runs are drawn from, from numpy on the
raw draws, or from hand-made examples; never from the analysis's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data.synthetic_run import SyntheticConfig, write_run
from poochlab.experiments.analysis.frontier import (
    apply_budget,
    best_setting_transfer,
    pareto_optimal,
    sustainable_throughput,
)
from poochlab.experiments.analysis.bucket_counts import bucket_values_us
from poochlab.experiments.analysis.run_analysis import analyze
from poochlab.experiments.analysis.saved_run import load_run

RESAMPLES = 400


def _within_ranks(value_us: float, raw: np.ndarray, percentile: float) -> bool:
    """True when ``value_us`` is the raw draws' percentile up to one rank and 3 significant figures."""
    ordered = np.sort(raw)
    rank = max(math.ceil(percentile / 100.0 * len(ordered)), 1)
    low = ordered[max(rank - 2, 0)]
    high = ordered[min(rank, len(ordered) - 1)]
    return low * (1 - 1e-3) <= value_us <= high * (1 + 1e-3)


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory):
    """Two configurations, three repetitions of five windows each, with a cache mixture in one."""
    folder = tmp_path_factory.mktemp("runs") / "mixed"
    configs = [
        SyntheticConfig({"protocol": "rest", "cache": "off"}, median_us=1800, sigma=0.5),
        SyntheticConfig({"protocol": "rest", "cache": "on"}, median_us=1800, sigma=0.5, hit_ratio=0.7),
    ]
    raw = write_run(folder, configs, repetitions=3, windows=5, requests_per_window=800, seed=3)
    return analyze(load_run(folder), resamples=RESAMPLES), configs, raw


def test_merged_percentiles_equal_percentiles_of_all_requests(mixed_run):
    analysis, configs, raw = mixed_run
    table = analysis.configs.set_index("config_id")
    for config in configs:
        values = raw[config.config_id]
        row = table.loc[config.config_id]
        assert row["requests"] == len(values)
        for percentile, column in ((50, "p50_ms"), (90, "p90_ms"), (95, "p95_ms"), (99, "p99_ms"), (99.9, "p99.9_ms")):
            assert _within_ranks(row[column] * 1000, values, percentile), (config.factors, column, row[column])
        assert row["max_ms"] * 1000 == pytest.approx(values.max(), rel=1e-3)
        assert row["mean_ms"] * 1000 == pytest.approx(values.mean(), rel=2e-3)


def test_trial_percentiles_merge_only_that_trials_windows(mixed_run):
    analysis, configs, raw = mixed_run
    # Each trial holds 5 windows x 800 draws, written in order: trial r covers slice r of the raw draws.
    config = configs[0]
    trials = analysis.trials[analysis.trials["config_id"] == config.config_id].sort_values("repetition")
    for position, (_, trial) in enumerate(trials.iterrows()):
        values = raw[config.config_id][position * 4000:(position + 1) * 4000]
        assert _within_ranks(trial["p99_ms"] * 1000, values, 99)
        assert trial["throughput_rps"] == pytest.approx(config.throughput_rps)


def test_cache_hit_ratio_and_breakdown_columns(mixed_run):
    analysis, configs, _ = mixed_run
    table = analysis.configs.set_index("config_id")
    assert table.loc[configs[1].config_id, "cache_hit_ratio_achieved"] == pytest.approx(0.7, abs=0.01)
    assert math.isnan(table.loc[configs[0].config_id, "cache_hit_ratio_achieved"])
    # The synthetic server computes for 0.4 x the median on average (log-normal, sigma 0.2).
    expected_compute = configs[0].median_us * 0.4 * math.exp(0.2**2 / 2) / 1000
    assert table.loc[configs[0].config_id, "breakdown_compute_ms"] == pytest.approx(expected_compute, rel=0.05)
    # With the cache, 70% of requests never reach the server: its time counts for 30% of them.
    assert table.loc[configs[1].config_id, "breakdown_compute_ms"] == pytest.approx(0.3 * expected_compute, rel=0.06)


@pytest.fixture(scope="session")
def drifting_run(tmp_path_factory):
    """Twenty identical configurations whose windows each shift the latency level (autocorrelation)."""
    folder = tmp_path_factory.mktemp("runs") / "drifting"
    configs = [SyntheticConfig({"replica": i}, median_us=2000, sigma=0.4, window_sigma=0.15) for i in range(20)]
    write_run(folder, configs, repetitions=3, windows=6, requests_per_window=1000, seed=10)
    return analyze(load_run(folder), resamples=RESAMPLES), configs


def test_intervals_contain_the_true_percentiles(drifting_run):
    analysis, configs = drifting_run
    table = analysis.configs
    for column, percentile in (("p50", 50), ("p99", 99)):
        truth = configs[0].true_percentile_us(percentile) / 1000
        covered = ((table[f"{column}_ci_low_ms"] <= truth) & (truth <= table[f"{column}_ci_high_ms"])).sum()
        # 95% intervals: about 19 of 20 expected. Resampling single requests instead of windows
        # ignores the window-to-window shifts and covers far less often.
        assert covered >= 15, (column, covered)
    assert (table["p99_ci_low_ms"] < table["p99_ms"]).all() and (table["p99_ms"] < table["p99_ci_high_ms"]).all()


@pytest.fixture(scope="session")
def repetition_runs(tmp_path_factory):
    """Twelve identical log-normal configurations, measured with 2 and with 8 repetitions."""
    runs = {}
    for repetitions in (2, 8):
        folder = tmp_path_factory.mktemp("runs") / f"repetitions{repetitions}"
        configs = [SyntheticConfig({"replica": i}, median_us=2000, sigma=0.4) for i in range(12)]
        write_run(folder, configs, repetitions=repetitions, windows=4, requests_per_window=300, seed=repetitions)
        runs[repetitions] = analyze(load_run(folder), resamples=RESAMPLES)
    return runs


def test_intervals_narrow_with_more_repetitions(repetition_runs):
    width = {reps: (a.configs["p99_ci_high_ms"] - a.configs["p99_ci_low_ms"]).mean() for reps, a in repetition_runs.items()}
    # Four times the data: the width should roughly halve.
    assert width[8] < 0.75 * width[2], width


def test_intervals_are_reproducible_with_the_seed(repetition_runs):
    analysis = repetition_runs[2]
    again = analyze(analysis.run, resamples=RESAMPLES)
    pd.testing.assert_series_equal(again.configs["p99_ci_low_ms"], analysis.configs["p99_ci_low_ms"])


def test_bucket_values_match_hdrhistogram_rounding():
    highest, median = bucket_values_us()
    # Below 2048 us every microsecond has its own bucket; above, a bucket spans 3 significant figures.
    assert highest[1000] == 1000 and median[1000] == 1000
    index = int(np.searchsorted(highest, 100_000))
    assert (highest[index] - highest[index - 1]) / highest[index] < 1e-3


def test_pareto_front_of_a_hand_made_example():
    throughput = pd.Series([100.0, 200.0, 300.0, 250.0, 300.0, float("nan")])
    p99 = pd.Series([1.0, 1.5, 4.0, 5.0, 3.0, 0.5])
    # 0: lowest p99; 1: more throughput for little p99; 2 is beaten by 4 (same throughput, lower p99);
    # 3 is beaten by 4 on both; 5 has no throughput and is never on the front.
    assert pareto_optimal(throughput, p99).tolist() == [True, True, False, False, True, False]


def test_budget_picks_the_highest_throughput_within_it():
    configs = pd.DataFrame({
        "label": ["a", "b", "c", "d"],
        "throughput_rps": [100.0, 400.0, 300.0, 900.0],
        "p99_ms": [1.0, 4.9, 2.0, 8.0],
        "p99_ci_low_ms": [0.9, 4.5, 1.8, 7.0],
        "p99_ci_high_ms": [1.1, 5.4, 2.2, 9.0],
    })
    result = apply_budget(configs, 5.0)
    assert result.best["label"] == "b"
    assert set(result.meeting["label"]) == {"a", "b", "c"}
    assert set(result.surely_meeting["label"]) == {"a", "c"}  # b's interval crosses the budget
    assert configs["pareto_optimal"].tolist() == [True, True, True, True]
    assert apply_budget(configs, 0.5).best is None


def test_best_setting_transfer_across_model_variants():
    rows = []
    # cache=on wins for the small model, batching=on for the large one; load is compared within.
    for variant, winner in (("small", ("on", "off")), ("large", ("off", "on"))):
        for cache in ("off", "on"):
            for batching in ("off", "on"):
                p99 = 2.0 if (cache, batching) == winner else 6.0
                rows.append({"model_variant": variant, "cache": cache, "batching": batching, "load_level": "high",
                             "p99_ms": p99, "throughput_rps": 100.0})
    configs = pd.DataFrame(rows)
    [transfer] = best_setting_transfer(configs, ["model_variant", "cache", "batching", "load_level"], None)
    best = dict(zip(transfer.rows["model_variant"], transfer.rows["best_setting"]))
    assert best == {"small": "cache=on, batching=off", "large": "cache=off, batching=on"}
    assert transfer.same_best == [False]


def test_sustainable_throughput_is_the_most_load_within_the_budget_per_setting():
    configs = pd.DataFrame({
        "cache": ["off", "off", "off", "on", "on"],
        "rate_rps": [100, 200, 400, 100, 200],
        "throughput_rps": [99.0, 198.0, 380.0, 100.0, 199.0],
        "p99_ms": [2.0, 4.0, 9.0, 6.0, 7.0],
    })
    table = sustainable_throughput(configs, ["cache", "rate_rps"], 5.0).set_index("setting")
    assert table.loc["cache=off", "sustainable throughput req/s"] == 198.0
    assert table.loc["cache=off", "at load"] == "rate_rps=200"
    assert math.isnan(table.loc["cache=on", "sustainable throughput req/s"])
    assert table.loc["cache=on", "p99 ms there"] == 6.0


def test_client_timing_is_read_from_the_recorders_keys(mixed_run):
    analysis, configs, _ = mixed_run
    row = analysis.configs.set_index("config_id").loc[configs[0].config_id]
    # The synthetic client spends 5% of the median encoding and 5% decoding.
    assert row["client_encode_ms"] == pytest.approx(configs[0].median_us * 0.05 / 1000)
    assert row["breakdown_client_ms"] == pytest.approx(configs[0].median_us * 0.10 / 1000)


def test_a_configuration_without_valid_trials_never_meets_the_budget_nor_joins_the_front():
    # "fast but invalid" has no valid trial; "partly valid" lost one trial, and its numbers come
    # from the valid one, so it counts.
    configs = pd.DataFrame({"label": ["fast but invalid", "partly valid", "valid"],
                            "throughput_rps": [900.0, 600.0, 500.0], "p99_ms": [3.0, 4.0, 4.5],
                            "p99_ci_high_ms": [3.5, 4.5, 4.9], "valid_trials": [0, 1, 2], "invalid_trials": [2, 1, 0]})
    result = apply_budget(configs, 5.0)
    assert result.best["label"] == "partly valid"
    assert list(result.meeting["label"]) == ["partly valid", "valid"]
    assert configs["pareto_optimal"].tolist() == [False, True, False]
    assert apply_budget(configs.iloc[:1].copy(), 5.0).best is None


def test_analysis_reads_each_factors_role_from_the_runs_own_manifest(tmp_path):
    from poochlab.experiments.analysis.tables import tables_of

    configs = [SyntheticConfig({"protocol": p, "users": u}, median_us=900 * u) for p in ("rest", "grpc") for u in (1, 4)]
    saved_before = tmp_path / "old"
    write_run(saved_before, configs, repetitions=1, windows=2, requests_per_window=200)
    # A run saved before the registry: the registry's roles (users sets the load).
    assert tables_of(analyze(load_run(saved_before), resamples=50), None).load_factors == ["users"]
    # A run whose manifest recorded other roles is read with them, not with today's registry.
    recorded = tmp_path / "recorded"
    write_run(recorded, configs, repetitions=1, windows=2, requests_per_window=200,
              manifest={"factor_registry": {"protocol": {"role": "load"}, "users": {"role": "design"}}})
    analysis = analyze(load_run(recorded), resamples=50)
    assert tables_of(analysis, None).load_factors == ["protocol"]
    assert analysis.with_role("design") == ["users"]
