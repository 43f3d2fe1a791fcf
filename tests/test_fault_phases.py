"""Fault trials on paper: phases, the pre-fault band and the recovery time from hand-made
windows; the verdict's fault rules; [[faults]] in a sweep spec; the fallback factor's client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poochlab.experiments.faults.phases import summarize
from poochlab.experiments.recording.histograms import encode, new_histogram
from poochlab.experiments.recording.verdict import TrialEvidence, judge
from poochlab.experiments.records import CacheCounts, TrialRecord, Window
from poochlab.experiments.sweep.spec import SpecError, parse_spec

HEALTHY = {"worker_cpu_percent": [20.0], "loop_lag_p99_us": 100.0, "lateness_p99_us": 200.0,
           "late_send_fraction": 0.0, "steal_percent": 0.0}


def window(index: int, latencies_ms: dict[float, int], errors: int = 0) -> Window:
    """A 1 s window starting at ``index`` s: ``{latency_ms: count}`` answered, ``errors`` failed."""
    histogram = new_histogram()
    for latency, count in latencies_ms.items():
        histogram.record_value(int(latency * 1000), count)
    return Window(index=index, start_s=float(index), duration_s=1.0, requests=sum(latencies_ms.values()),
                  errors=errors, histogram=encode(histogram))


def crash(injected: float | None, cleared: float | None) -> dict:
    return {"kind": "server_crash", "scheduled_at_s": 3.0, "scheduled_duration_s": 0.0,
            "injected_at_s": injected, "cleared_at_s": cleared, "detail": {}, "lasted_s": None}


# Three normal windows, a fault from 3.2 s to 5.5 s, then one slow window and two normal ones.
WINDOWS = [
    window(0, {10: 100}), window(1, {10: 100}), window(2, {10: 100}),
    window(3, {10: 50}, errors=50), window(4, {}, errors=100), window(5, {200: 100}),
    window(6, {20: 100}),  # p99 20 ms: above 1.5 x 10 ms, still recovering
    window(7, {12: 100}),  # back within the band
    window(8, {10: 100}),
]


def test_phases_band_and_recovery_of_a_fault() -> None:
    summary, marked, events = summarize(WINDOWS, [crash(3.2, 5.5)], slo_ms=100)
    assert summary["before"]["windows"] == [0, 1, 2]
    assert summary["during"]["windows"] == [3, 4, 5]
    assert summary["after"]["windows"] == [6, 7, 8]
    assert summary["before"]["p99_ms"] == pytest.approx(10, rel=1e-3)
    assert summary["before"]["availability"] == 1.0
    # During: 150 answered (50 within 100 ms, 100 at 200 ms) of 300 attempts.
    assert (summary["during"]["answered"], summary["during"]["errors"]) == (150, 150)
    assert summary["during"]["availability"] == pytest.approx(50 / 300)
    assert summary["during"]["p99_ms"] == pytest.approx(200, rel=1e-3)
    assert summary["after"]["availability"] == 1.0
    assert summary["after"]["p99_ms"] == pytest.approx(20, rel=1e-3)
    assert summary["band"]["p99_ms"] == pytest.approx(15, rel=1e-3)
    assert summary["band"]["availability"] == pytest.approx(0.99)
    # Window 6 is still out of the band; window 7 (starting 1.5 s after the clear) is back.
    assert events[0]["recovered_at_s"] == 7.0 and events[0]["recovery_s"] == pytest.approx(1.5)
    assert summary["recovery_s"] == pytest.approx(1.5)
    assert marked == {3, 4, 5, 6} and summary["fault_windows"] == [3, 4, 5, 6]


def test_availability_more_than_one_point_below_is_not_recovered() -> None:
    windows = [window(0, {10: 1000}), window(1, {10: 1000}), window(2, {}, errors=1000),
               window(3, {10: 985}, errors=15),  # 98.5%: 1.5 points below the pre-fault 100%
               window(4, {10: 991}, errors=9)]   # 99.1%: within one point
    summary, marked, events = summarize(windows, [crash(2.0, 3.0)], slo_ms=100)
    assert events[0]["recovered_at_s"] == 4.0 and events[0]["recovery_s"] == pytest.approx(1.0)
    assert marked == {2, 3}
    # Answers slower than the SLO count against availability like failures.
    summary, _, _ = summarize([window(0, {10: 90, 150: 10}), window(1, {}, errors=5)], [crash(1.0, 1.5)], slo_ms=100)
    assert summary["before"]["availability"] == pytest.approx(0.9)


def test_a_fault_never_recovered_from_marks_every_later_window() -> None:
    windows = [window(0, {10: 100}), window(1, {}, errors=100), window(2, {50: 100}), window(3, {50: 100})]
    summary, marked, events = summarize(windows, [crash(1.0, 1.9)], slo_ms=100)
    assert events[0]["recovery_s"] is None and summary["recovery_s"] is None
    assert marked == {1, 2, 3}


def test_without_pre_fault_windows_there_is_no_band() -> None:
    windows = [window(0, {}, errors=10), window(1, {10: 100})]
    summary, marked, events = summarize(windows, [crash(0.0, 0.5)], slo_ms=100)
    assert summary["band"] is None and "band_note" in summary and events[0]["recovery_s"] is None
    # A fault whose injection failed spans nothing.
    summary, marked, _ = summarize(WINDOWS, [crash(None, None)], slo_ms=100)
    assert marked == set() and summary["during"]["windows"] == []


def evidence(**changes) -> TrialEvidence:
    base = dict(mode="open", answered=900, errors_by_kind={"connection": 100}, measured_s=10.0,
                generator=HEALTHY, p99_us=10_000.0, planned_rate_rps=100.0)
    return TrialEvidence(**{**base, **changes})


def test_errors_inside_scheduled_faults_are_findings_and_outside_ones_are_judged() -> None:
    # Without fault windows 10% connection errors void the trial ...
    assert judge(evidence()).kinds == ["request_errors"]
    # ... inside them they are what the experiment looked for.
    verdict = judge(evidence(errors_outside_faults={"connection": 0}, answered_outside_faults=800,
                             measured_outside_faults_s=8.0))
    assert verdict.valid and not verdict.server_overloaded
    assert any(f.startswith("during scheduled faults: 100 of 200 requests failed") for f in verdict.findings)
    # 20 of 820 outside the faults (2.4%) is above 1%: invalid again.
    verdict = judge(evidence(errors_outside_faults={"connection": 20}, answered_outside_faults=800,
                             measured_outside_faults_s=8.0))
    assert not verdict.valid and verdict.kinds == ["request_errors"]


def test_a_redis_outage_makes_cache_errors_a_finding() -> None:
    cache = CacheCounts(hits=0, misses=900, errors=60, errors_by_reason={"connection": 60})
    assert "cache_unreliable" in judge(evidence(errors_by_kind={}, cache=cache)).kinds
    verdict = judge(evidence(errors_by_kind={}, cache=cache, redis_outage=True, errors_outside_faults={},
                             answered_outside_faults=900, measured_outside_faults_s=10.0))
    assert verdict.valid and any("scheduled Redis outage" in f for f in verdict.findings)


def test_result_windows_of_an_unstable_fault_trial_leave_the_fault_out() -> None:
    record = TrialRecord(run_id="r", trial_id="t", config_id="c", repetition=1, factors={}, seed=1,
                         windows=[window(i, {10: 10}) for i in range(4)])
    record.windows[2].fault = True
    assert [w.index for w in record.result_windows()] == [0, 1, 3]
    # A record saved before fault trials existed still loads, with no faults.
    data = json.loads(record.to_json())
    del data["faults"], data["fault_summary"]
    for saved in data["windows"]:
        del saved["fault"]
    old = TrialRecord.from_dict(data)
    assert old.faults == [] and old.fault_summary == {} and not any(w.fault for w in old.windows)


SPEC = {"sweep": {"profile": "quick"}, "factors": {"fallback": ["off", "on"]},
        "controls": {"load_mode": "open", "rate_rps": 50}}


def test_faults_in_a_sweep_spec_are_parsed_and_errors_name_file_and_key() -> None:
    spec = parse_spec({**SPEC, "faults": [{"kind": "server_crash", "at_s": 5}]}, Path("crash.toml"))
    assert [(f.kind, f.at_s) for f in spec.faults] == [("server_crash", 5.0)]
    assert spec.to_dict()["faults"][0]["kind"] == "server_crash"
    with pytest.raises(SpecError, match=r"crash.toml: faults\[0\].duration_s"):
        parse_spec({**SPEC, "faults": [{"kind": "redis_outage", "at_s": 5}]}, Path("crash.toml"))
    with pytest.raises(SpecError, match=r"s.toml: faults\[0\].kind: a slow_model .* server_kind = \"lab\""):
        parse_spec({**SPEC, "sweep": {"server_kind": "tfserving"},
                    "faults": [{"kind": "slow_model", "at_s": 1, "duration_s": 2, "delay_ms": 50}]}, Path("s.toml"))
    with pytest.raises(SpecError, match=r"s.toml: faults\[0\].kind: a redis_outage stops the lab's own"):
        parse_spec({**SPEC, "sweep": {"redis_url": "redis://elsewhere:6379/0"},
                    "faults": [{"kind": "redis_outage", "at_s": 1, "duration_s": 2}]}, Path("s.toml"))
    assert parse_spec(SPEC, Path("none.toml")).faults == ()


def test_the_fallback_and_deadline_factors_build_the_supervised_client(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from poochlab.experiments.sweep.fault_setup import reactive_client, slo_ms

    base = tmp_path / "small" / "pooch_predictor"
    (base / "3" / "assets.extra").mkdir(parents=True)
    (base / "12" / "assets.extra").mkdir(parents=True)
    context = SimpleNamespace(servers=SimpleNamespace(model_base_path=lambda variant: tmp_path / variant / "pooch_predictor"))
    on = reactive_client(context, {"fallback": "on", "deadline_ms": 250, "model_variant": "small"})
    assert on["fallback"].deadline_s == 0.25 and "retries" not in on  # the registry maps retries
    assert Path(on["fallback"].baseline_path) == base / "12" / "assets.extra" / "historical_baseline.json"
    # The trial record describes its client as JSON.
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load.trial import _describe_client

    assert json.loads(json.dumps(_describe_client(ClientConfig(**on))))["fallback"]["deadline_s"] == 0.25
    assert reactive_client(context, {"fallback": "off", "deadline_ms": 250, "retries": 2}) == {"timeout_s": 0.25}
    spec = SimpleNamespace(p99_budget_ms=None)
    assert slo_ms(spec, {"fallback": "on"}) == 100 and slo_ms(spec, {"fallback": "off"}) == 5000
    assert slo_ms(SimpleNamespace(p99_budget_ms=40), {"fallback": "on"}) == 40
