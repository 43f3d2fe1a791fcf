"""``poochlab compare``: real differences are flagged, noise is not, changed conditions are warned about."""

from __future__ import annotations

import argparse

import pytest

from data.synthetic_run import SyntheticConfig, write_run
from poochlab.cli import CommandError
from poochlab.experiments.analysis.comparison import compare_analyses, provenance_warnings
from poochlab.experiments.analysis.run_analysis import analyze
from poochlab.experiments.analysis.saved_run import load_run
from poochlab.experiments.commands import compare as compare_command

RESAMPLES = 400


def _configs(slow_grpc: float = 1.0) -> list[SyntheticConfig]:
    return [
        SyntheticConfig({"protocol": "rest"}, median_us=1500, sigma=0.4, window_sigma=0.05),
        SyntheticConfig({"protocol": "grpc"}, median_us=1500 * slow_grpc, sigma=0.4, window_sigma=0.05),
    ]


@pytest.fixture(scope="session")
def three_runs(tmp_path_factory):
    """A baseline, a re-run of the same distributions, and a run where gRPC got 40% slower."""
    root = tmp_path_factory.mktemp("compare")
    write_run(root / "base", _configs(), repetitions=3, windows=5, requests_per_window=600, seed=21)
    write_run(root / "same", _configs(), repetitions=3, windows=5, requests_per_window=600, seed=22)
    write_run(root / "slower", _configs(slow_grpc=1.4) + [SyntheticConfig({"protocol": "rest+cache"}, median_us=400)],
              repetitions=3, windows=5, requests_per_window=600, seed=24,
              manifest={"platform": {"cpu_model": "Intel Xeon", "cores": 4, "kernel": "6.1.0-synthetic"},
                        "versions": {"poochlab": "0.1.0", "tensorflow": "2.20.0", "grpcio": "1.85.0", "locust": "2.47.0"},
                        "started_at": "2026-12-03T06:00:00Z",
                        "spec": {"factors": {"protocol": ["rest", "grpc", "rest+cache"]},
                                 "controls": {"model_version": 2, "client_library": "fast", "server_threads": 2}}})
    return {name: analyze(load_run(root / name), resamples=RESAMPLES) for name in ("base", "same", "slower")}


def test_a_real_difference_is_flagged_and_only_there(three_runs):
    comparison = compare_analyses(three_runs["base"], three_runs["slower"], resamples=RESAMPLES)
    flagged = {(r.configuration, r.percentile) for r in comparison.significant.itertuples()}
    assert ("protocol=grpc", "p50") in flagged and ("protocol=grpc", "p99") in flagged
    assert not any(configuration == "protocol=rest" for configuration, _ in flagged)
    grpc_p50 = comparison.rows[(comparison.rows["configuration"] == "protocol=grpc") & (comparison.rows["percentile"] == "p50")].iloc[0]
    assert grpc_p50["relative_change"] == pytest.approx(0.4, abs=0.08)
    assert grpc_p50["difference_ci_low_ms"] > 0
    assert comparison.only_in_b == ["protocol=rest+cache"]


def test_a_rerun_of_the_same_distributions_shows_no_difference(three_runs):
    comparison = compare_analyses(three_runs["base"], three_runs["same"], resamples=RESAMPLES)
    assert len(comparison.rows) == 4
    assert comparison.significant.empty, comparison.significant
    assert comparison.rows["cis_overlap"].all()
    assert not any("machines" in w or "versions" in w or "dates" in w for w in comparison.warnings)


def test_different_machine_versions_and_dates_are_warned_about(three_runs):
    warnings = provenance_warnings(three_runs["base"].run.manifest, three_runs["slower"].run.manifest)
    text = "\n".join(warnings)
    assert "cpu_model 'AMD EPYC 7B13' vs 'Intel Xeon'" in text
    assert "cores 2 vs 4" in text
    assert "tensorflow 2.21.0 vs 2.20.0" in text
    assert "different dates: 2026-11-27 vs 2026-12-03" in text
    assert "different controls (configurations are matched on factors only): model_version 1 vs 2" in text


def test_compare_command_prints_the_differences_and_writes_csv(three_runs, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    base, slower = three_runs["base"].run.path, three_runs["slower"].run.path
    args = parser.parse_args([str(base), str(slower), "--csv", str(tmp_path / "cmp.csv"), "--resamples", "400"])
    assert compare_command.run(args) == 0
    out = capsys.readouterr().out
    assert "warning: different machines" in out
    assert "only in run B: protocol=rest+cache" in out
    assert "| protocol=grpc | p99 |" in out
    assert "| protocol=rest |" not in out  # no real difference there, so not listed without --all
    assert (tmp_path / "cmp.csv").read_text().count("protocol=") == 4


def test_compare_command_names_a_folder_that_is_not_a_run(tmp_path):
    parser = argparse.ArgumentParser()
    compare_command.add_arguments(parser)
    with pytest.raises(CommandError, match=r"manifest\.json: missing"):
        compare_command.run(parser.parse_args([str(tmp_path), str(tmp_path)]))
