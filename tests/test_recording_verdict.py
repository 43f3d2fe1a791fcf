"""The trial verdict: validity judges the instrument; a server that falls behind is a finding.

Every case is built by hand, so the expected verdict follows from the numbers in the test.
"""

from __future__ import annotations

from typing import Any

from poochlab.experiments.recording.verdict import TrialEvidence, judge
from poochlab.experiments.records import CacheCounts, TrialRecord, Validity

HEALTHY = {"worker_cpu_percent": [40.0], "loop_lag_p99_us": 800.0, "lateness_p99_us": 300.0, "steal_percent": 0.5}


def _evidence(**changes: Any) -> TrialEvidence:
    base: dict[str, Any] = dict(mode="open", answered=6_000, errors_by_kind={}, measured_s=6.0, generator=HEALTHY,
                                p99_us=2_000.0, planned_rate_rps=1_000.0)
    base.update(changes)
    return TrialEvidence(**base)


def test_a_healthy_trial_that_kept_up_is_valid_with_nothing_to_say() -> None:
    verdict = judge(_evidence())
    assert verdict.valid and verdict.category == "valid"
    assert verdict.reasons == [] and verdict.findings == [] and verdict.warnings == []


def test_a_starved_generator_is_invalid_as_generator_limited() -> None:
    verdict = judge(_evidence(generator={**HEALTHY, "worker_cpu_percent": [97.0], "loop_lag_p99_us": 40_000.0}))
    assert not verdict.valid
    assert verdict.kinds == ["generator_limited", "generator_limited"]
    assert verdict.category == "generator_limited"
    assert any("97% CPU" in r for r in verdict.reasons) and any("40.0 ms" in r for r in verdict.reasons)


def test_a_server_that_answers_too_few_of_the_arrivals_is_a_valid_finding() -> None:
    # 1,000 req/s planned for 6 s; 4,800 answered = 800 req/s = 80% < 90%.
    verdict = judge(_evidence(answered=4_800))
    assert verdict.valid and verdict.server_overloaded and verdict.category == "server_overloaded"
    assert verdict.findings == ["server fell behind: answered 800 req/s of the 1000 planned (80%) "
                                "while the generator sent on time"]


def test_timeouts_and_queue_full_refusals_are_findings_not_invalidity() -> None:
    # 5,700 answered + 300 failed: 5% failed, all of kinds an overloaded server produces.
    verdict = judge(_evidence(answered=5_700, errors_by_kind={"timeout": 200, "http_503": 100}))
    assert verdict.valid and verdict.server_overloaded
    assert verdict.findings[0] == ("server did not keep up: 300 of 6000 requests (5.0%) failed or timed out "
                                   "(timeout 200, http_503 100)")


def test_errors_load_does_not_cause_make_the_trial_invalid() -> None:
    verdict = judge(_evidence(answered=5_700, errors_by_kind={"http_400": 300}))
    assert not verdict.valid and verdict.kinds == ["request_errors"]
    assert "http_400 300" in verdict.reasons[0]


def test_one_percent_of_errors_or_fewer_is_no_finding() -> None:
    verdict = judge(_evidence(answered=5_940, errors_by_kind={"timeout": 60}))  # exactly 1%
    assert verdict.valid and not verdict.server_overloaded and verdict.findings == []


def test_nothing_answered_is_no_data() -> None:
    verdict = judge(_evidence(answered=0, errors_by_kind={"timeout": 12}))
    assert not verdict.valid and verdict.kinds == ["no_data"]
    assert "12 failed: timeout 12" in verdict.reasons[0]


def test_a_cache_that_errors_on_more_than_one_percent_of_lookups_is_not_a_cache_measurement() -> None:
    cache = CacheCounts(hits=2_900, misses=3_100, errors=240, errors_by_reason={"timeout": 40, "bypassed": 200})
    verdict = judge(_evidence(cache=cache, planned_hit_ratio=0.5))
    assert not verdict.valid and verdict.kinds == ["cache_unreliable"]
    # 240 / 6,000 = 4.0%; the reasons are listed, largest first.
    assert verdict.reasons[0].startswith("cache errors on 240 of 6000 lookups (4.0% > 1%) (bypassed 200, timeout 40)")


def test_an_achieved_hit_ratio_off_the_plan_is_not_the_planned_experiment() -> None:
    on_plan = judge(_evidence(cache=CacheCounts(hits=3_150, misses=2_850, errors=0), planned_hit_ratio=0.5))
    assert on_plan.valid  # 0.525 is within ±0.03
    off_plan = judge(_evidence(cache=CacheCounts(hits=1_200, misses=4_800, errors=0), planned_hit_ratio=0.5))
    assert not off_plan.valid and off_plan.kinds == ["cache_unreliable"]
    assert off_plan.reasons == ["cache hit ratio 0.200, planned 0.50 (tolerance ±0.03)"]


def test_a_closed_loop_whose_corrected_p99_is_over_twice_its_raw_p99_is_flagged_but_valid() -> None:
    hidden = judge(_evidence(mode="closed", planned_rate_rps=None, p99_us=940.0, corrected_p99_us=190_800.0))
    assert hidden.valid
    assert len(hidden.warnings) == 1 and "coordinated omission" in hidden.warnings[0]
    assert "190.80 ms" in hidden.warnings[0] and "0.94 ms" in hidden.warnings[0]
    mild = judge(_evidence(mode="closed", planned_rate_rps=None, p99_us=1_000.0, corrected_p99_us=1_900.0))
    assert mild.warnings == []


def test_instability_is_a_warning_and_an_earlier_failure_is_kept() -> None:
    earlier = Validity()
    earlier.invalidate("trial failed: worker died", "failed")
    verdict = judge(_evidence(stability_note="not stable: chi-square 14.2"), earlier)
    assert verdict is earlier and verdict.kinds == ["failed"] and verdict.warnings == ["not stable: chi-square 14.2"]


def test_a_schema_1_record_still_loads_with_its_reasons_of_unknown_kind() -> None:
    data = {"run_id": "r", "trial_id": "t", "config_id": "c", "repetition": 1, "factors": {}, "seed": 1,
            "validity": {"valid": False, "reasons": ["load generator worker 0 used 95% CPU (limit 80%)"]},
            "schema_version": 1}
    record = TrialRecord.from_dict(data)
    assert record.schema_version == 2
    assert record.validity.kinds == ["invalid"] and record.validity.category == "invalid"
    assert record.validity.findings == [] and record.validity.warnings == []
