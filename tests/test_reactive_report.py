"""The report's "Possible worlds" table and "Reactive qualities" section from synthetic records
whose numbers are known by construction, and the fault figure."""

from __future__ import annotations

import pytest

from poochlab.experiments.analysis.fault_figure import plot_faults_over_time
from poochlab.experiments.analysis.reactive import NOT_MEASURED, possible_worlds_table, reactive_qualities
from poochlab.experiments.recording.histograms import encode, new_histogram
from poochlab.experiments.records import TrialRecord, Window


def _histogram(values_us: dict[int, int]) -> str:
    histogram = new_histogram()
    for value, count in values_us.items():
        histogram.record_value(value, count)
    return encode(histogram)


def _window(index: int, values_us: dict[int, int], errors: int = 0, planned_rate_rps: float | None = None,
            **fields) -> Window:
    window = Window(index=index, start_s=float(index), duration_s=1.0, requests=sum(values_us.values()),
                    errors=errors, histogram=_histogram(values_us), **fields)
    if planned_rate_rps is not None:  # the rate schedule's field (wt-elastic), where a run has it
        window.planned_rate_rps = planned_rate_rps  # type: ignore[attr-defined]
    return window


def _record(trial_id: str, windows: list[Window], **fields) -> TrialRecord:
    record = TrialRecord(run_id="r", trial_id=trial_id, config_id=trial_id, repetition=1,
                         factors={"protocol": "rest"}, seed=1, windows=windows, **fields)
    record.stable_windows = [w.index for w in windows if not w.fault]
    return record


def test_a_run_without_faults_schedules_shedding_or_scaling_says_not_measured() -> None:
    # 100 answers per window: 99 at 2 ms, 1 at 9 ms -> p99 of the merged windows is 2 ms.
    steady = _record("steady", [_window(i, {2000: 99, 9000: 1}) for i in range(3)])
    lines = reactive_qualities([steady])
    assert lines[0].startswith("**Responsive:** p99 under steady load 2 ms")
    assert lines[1] == f"**Resilient:** {NOT_MEASURED} (no trial with [[faults]])."
    assert lines[2] == f"**Elastic:** {NOT_MEASURED} (no rate schedule or scaling)."
    assert lines[3] == f"**Message-driven:** {NOT_MEASURED} (no request was shed)."
    assert possible_worlds_table([steady]).empty


def test_faults_scaling_rate_changes_and_shedding_are_reported_with_their_numbers() -> None:
    crash = _record("crash", [_window(0, {1000: 100}), _window(1, {50_000: 10}, errors=90, fault=True),
                              _window(2, {1000: 100})],
                    faults=[{"kind": "server_crash", "injected_at_s": 1.0, "cleared_at_s": None, "recovered_at_s": 1.8}],
                    fault_summary={"during": {"availability": 0.1, "errors": 90, "p99_ms": 50.0}, "recovery_s": 0.8},
                    errors_by_kind={"connection": 90})
    # The planned rate rises from 100 to 200 req/s; the slow window (30 ms) is the second.
    elastic = _record("elastic", [_window(0, {1000: 100}, planned_rate_rps=100.0),
                                  _window(1, {30_000: 200}, planned_rate_rps=200.0)])
    # The scaling timeline and the shed summary as the elastic branch records them (wt-elastic):
    # set as attributes, so the reader is tested against those names before the merge.
    elastic.timeline = [  # type: ignore[attr-defined]
        {"at_s": 0.9, "event": "scale_add_decided"}, {"at_s": 1.2, "event": "replica_joined"},
        {"at_s": 1.9, "event": "replica_left"}, {"at_s": 1.95, "event": "replica_joined"},
        {"at_s": None, "event": "replica_left", "after_trial": True}]
    shedding = _record("shedding", [_window(0, {1000: 75}, errors=25)], errors_by_kind={"http_503": 25})
    shedding.shed = {"requests": 25, "share": 0.25, "refusal_p50_us": 800.0,  # type: ignore[attr-defined]
                     "refusal_p99_us": 2000.0}
    # A crash's 503s are not shedding: only a trial's shed summary counts.
    crash.errors_by_kind["http_503"] = 5
    responsive, resilient, elastic_line, message = reactive_qualities([crash, elastic, shedding])
    assert "p99 during faults up to 50 ms" in responsive
    assert "availability during 10.00%, 90 failed, recovered in 0.8 s" in resilient and "server_crash" in resilient
    assert "replicas joined 2 times, left 1 times" in elastic_line
    assert "worst window 30 ms: elastic window 1" in elastic_line
    # 25 shed, a share of 0.25 of the shedding trial's attempts; its refusal p99 2000 us = 2 ms.
    assert message == ("**Message-driven:** 25 requests shed, 25.00% of the attempts of the trials that shed; "
                       "refusal p99 up to 2 ms (worst trial).")



def _arms(scored: int, likes: float, predicted: float, mae: float, latency_us: dict[int, int],
          excluded: int = 0) -> dict:
    return {"requests": sum(latency_us.values()), "errors": 0, "pupdates_scored": scored,
            "pupdates_excluded": excluded, "mean_likes": likes, "mean_predicted": predicted, "mae": mae,
            "histogram": _histogram(latency_us)}


def test_the_worlds_table_weights_each_trial_by_its_scored_pupdates_and_merges_histograms() -> None:
    first = _record("a", [_window(0, {1000: 10})], arms={
        "stable": _arms(30, 100.0, 90.0, 10.0, {2000: 30}, excluded=2),
        "canary": _arms(10, 120.0, 110.0, 40.0, {5000: 10})})
    second = _record("b", [_window(0, {1000: 10})], arms={
        "stable": _arms(10, 200.0, 190.0, 50.0, {2000: 10}, excluded=1),
        "canary": _arms(10, 80.0, 70.0, 20.0, {5000: 9, 100_000: 1})})
    table = possible_worlds_table([first, second], ["protocol"]).set_index("arm")
    # stable: (30*100 + 10*200) / 40 = 125 likes; MAE (30*10 + 10*50) / 40 = 20.
    assert table.loc["stable", "pupdates served (scored)"] == 40
    assert table.loc["stable", "excluded (altered)"] == 3
    assert table.loc["stable", "mean likes per pupdate"] == pytest.approx(125.0)
    assert table.loc["stable", "error (MAE, likes)"] == pytest.approx(20.0)
    # canary: MAE (10*40 + 10*20) / 20 = 30; of 20 latencies one is 100 ms: p99 is 100 ms.
    assert table.loc["canary", "error (MAE, likes)"] == pytest.approx(30.0)
    assert table.loc["canary", "p99 (ms)"] == pytest.approx(100.0, rel=1e-3)
    assert list(table.index) == ["stable", "canary"]


def test_the_fault_figure_draws_shaded_faults_and_answer_paths() -> None:
    crash = _record("crash", [_window(0, {1000: 100}, answer_paths={"model": 100}),
                              _window(1, {2000: 60}, errors=0, fault=True, answer_paths={"fallback": 60},
                                      cache_errors_by_reason={"connection": 3}),
                              _window(2, {1000: 100}, answer_paths={"model": 100})],
                    faults=[{"kind": "redis_outage", "injected_at_s": 1.0, "cleared_at_s": 2.0, "recovered_at_s": 2.5}])
    figure, caption = plot_faults_over_time([crash])
    top, bottom = figure.axes[:2]
    assert top.get_ylabel() == "p99 latency (ms)" and bottom.get_xlabel() == "time in measurement (s)"
    assert [t.get_text() for t in top.texts] == ["redis_outage", "recovery"]
    # The fault from 1.0 to 2.0 s, its recovery from 2.0 to 2.5 s.
    spans = [(p.get_x(), p.get_width()) for p in top.patches]
    assert spans == [(pytest.approx(1.0), pytest.approx(1.0)), (pytest.approx(2.0), pytest.approx(0.5))]
    labels = bottom.get_legend_handles_labels()[1]
    assert {"answered: model", "answered: fallback", "cache errors"} <= set(labels)
    assert "redis_outage" in caption
