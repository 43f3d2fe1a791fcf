"""What a trial's numbers mean: valid or not, and what a reader must know about them.

Validity judges the instrument, never the server (MLPerf LoadGen's VALID / INVALID with reasons):

- *generator-limited* (invalid): the load generator's own health failed (CPU, event-loop lag,
  late sends, CPU steal), so its latencies include its own queueing;
- *cache unreliable* (invalid): a cache-on trial whose cache errored on more than
  ``MAX_CACHE_ERROR_FRACTION`` of its lookups, or whose achieved hit ratio is more than
  ``HIT_RATIO_TOLERANCE`` from the planned one: it is not the experiment the spec asked for;
- *request errors* (invalid): requests failed for reasons load does not cause (a refused
  connection, a 400, a bad
  answer): the trial did not measure predictions;
- *no data* (invalid): no request was answered, so there is no latency to report.

A server that falls behind a load the generator delivered on time is a *finding*, and the trial
stays valid: throughput below the planned rate, timeouts, queue-full refusals. Doubts that do not
void the numbers are *warnings*: a trial that never became stable, or a closed loop whose
coordinated-omission-corrected p99 is more than ``CO_HIDDEN_STALL_RATIO`` times its raw p99 (the
closed loop sent nothing while the server stalled, so its raw percentiles hide the stall).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from poochlab.experiments.recording import health as health_rules
from poochlab.experiments.records import CacheCounts, Validity

# More failed lookups than this and the trial no longer measures the planned cache.
MAX_CACHE_ERROR_FRACTION = 0.01
# The achieved hit ratio must be within this of the planned one.
HIT_RATIO_TOLERANCE = 0.03
# An open loop that answered less than this share of its planned arrivals fell behind.
MIN_ANSWERED_SHARE = 0.90
# A closed loop whose corrected p99 exceeds its raw p99 by more than this hides stalls.
CO_HIDDEN_STALL_RATIO = 2.0
# Error kinds an overloaded or stalled server produces; any other kind is a broken measurement.
OVERLOAD_ERROR_KINDS = frozenset({
    "timeout", "http_429", "http_503", "http_504",
    "grpc_UNAVAILABLE", "grpc_DEADLINE_EXCEEDED", "grpc_RESOURCE_EXHAUSTED",
})


@dataclass(frozen=True)
class TrialEvidence:
    """What the verdict is drawn from, all measured over the trial's measurement phase."""

    mode: str  # "open" | "closed"
    answered: int  # successful requests in every window (plus the tail)
    errors_by_kind: Mapping[str, int]  # outstanding requests at the end count as "timeout"
    measured_s: float
    generator: Mapping[str, object]  # health: worker_cpu_percent, loop_lag_p99_us, lateness_p99_us, ...
    p99_us: float | None  # raw p99 of the result windows
    planned_rate_rps: float | None = None  # open loop
    corrected_p99_us: float | None = None  # closed loop: the coordinated-omission-corrected p99
    cache: CacheCounts | None = None  # None: no cache in use
    planned_hit_ratio: float | None = None
    stability_note: str | None = None  # set when the trial did not become stable
    extra_warnings: tuple[str, ...] = field(default_factory=tuple)
    # A trial with scheduled faults: what happened outside its fault windows. Only these errors
    # are judged against the error rule (and only this throughput against the planned rate);
    # those inside the fault windows are what the experiment set out to see: findings.
    errors_outside_faults: Mapping[str, int] | None = None
    answered_outside_faults: int | None = None
    measured_outside_faults_s: float | None = None
    # A Redis outage was planted: cache errors and a missed hit ratio are findings. (Cache
    # counts are per trial, not per window, so those outside the outage cannot be told apart.)
    redis_outage: bool = False
    # An open loop with a rate schedule: (window index, planned rate, answered rate) each.
    window_rates: tuple[tuple[int, float, float], ...] = ()


def _kinds_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]))


def judge(evidence: TrialEvidence, validity: Validity | None = None) -> Validity:
    """The trial's verdict; ``validity`` (e.g. holding a failure) is extended, not replaced."""
    verdict = validity if validity is not None else Validity()
    failures = sum(evidence.errors_by_kind.values())
    attempts = evidence.answered + failures
    if evidence.answered == 0:
        failed = f" ({failures} failed: {_kinds_text(evidence.errors_by_kind)})" if failures else ""
        verdict.invalidate(f"no request was answered during the measurement{failed}", "no_data")
    generator_reasons = health_rules.health_reasons(dict(evidence.generator), evidence.p99_us)
    for reason in generator_reasons:
        verdict.invalidate(reason, "generator_limited")

    if evidence.errors_outside_faults is not None:
        _note_fault_errors(evidence, verdict)
        failures = sum(evidence.errors_outside_faults.values())
        attempts = (evidence.answered_outside_faults or 0) + failures
        evidence = replace(evidence, errors_by_kind=evidence.errors_outside_faults,
                           answered=evidence.answered_outside_faults or 0,
                           measured_s=evidence.measured_outside_faults_s or 0.0)
    if attempts:
        _judge_errors(evidence, verdict, failures, attempts)
    if not generator_reasons:
        _judge_throughput(evidence, verdict)
    _judge_cache(evidence, verdict)

    if (evidence.mode == "closed" and evidence.p99_us and evidence.corrected_p99_us
            and evidence.corrected_p99_us > CO_HIDDEN_STALL_RATIO * evidence.p99_us):
        verdict.warnings.append(
            f"coordinated omission hides stalls: corrected p99 {evidence.corrected_p99_us / 1000:.2f} ms is "
            f"{evidence.corrected_p99_us / evidence.p99_us:.1f}x the raw p99 {evidence.p99_us / 1000:.2f} ms "
            f"(flagged above {CO_HIDDEN_STALL_RATIO:g}x); an open loop measures what users would see")
    if evidence.stability_note:
        verdict.warnings.append(evidence.stability_note)
    verdict.warnings.extend(evidence.extra_warnings)
    return verdict


def _note_fault_errors(evidence: TrialEvidence, verdict: Validity) -> None:
    outside = evidence.errors_outside_faults or {}
    inside = {k: n - outside.get(k, 0) for k, n in evidence.errors_by_kind.items() if n - outside.get(k, 0) > 0}
    answered = evidence.answered - (evidence.answered_outside_faults or 0)
    if inside:
        failed = sum(inside.values())
        verdict.findings.append(f"during scheduled faults: {failed} of {failed + answered} requests failed or "
                                f"timed out ({_kinds_text(inside)}); judged as findings, not as the instrument's errors")


def _judge_errors(evidence: TrialEvidence, verdict: Validity, failures: int, attempts: int) -> None:
    if failures / attempts <= health_rules.MAX_ERROR_FRACTION:
        return
    overload = {k: n for k, n in evidence.errors_by_kind.items() if k in OVERLOAD_ERROR_KINDS and n}
    broken = {k: n for k, n in evidence.errors_by_kind.items() if k not in OVERLOAD_ERROR_KINDS and n}
    share = f"{failures} of {attempts} requests ({100 * failures / attempts:.1f}%)"
    if sum(broken.values()) / attempts > health_rules.MAX_ERROR_FRACTION:
        verdict.invalidate(f"{share} failed, {sum(broken.values())} for reasons load does not cause "
                           f"({_kinds_text(broken)})", "request_errors")
    if overload:
        verdict.server_overloaded = True
        verdict.findings.append(f"server did not keep up: {share} failed or timed out ({_kinds_text(overload)})")


def _judge_throughput(evidence: TrialEvidence, verdict: Validity) -> None:
    if evidence.mode != "open" or not evidence.planned_rate_rps or evidence.measured_s <= 0:
        return
    behind = [(i, planned, achieved) for i, planned, achieved in evidence.window_rates
              if achieved < MIN_ANSWERED_SHARE * planned]
    if behind:  # a rate schedule: each window against its own planned rate
        verdict.server_overloaded = True
        verdict.findings.append("server fell behind the rate schedule in windows " + ", ".join(
            f"{i} ({achieved:.0f} of {planned:.0f} req/s)" for i, planned, achieved in behind)
            + " while the generator sent on time")
        return
    answered_rps = evidence.answered / evidence.measured_s
    if answered_rps < MIN_ANSWERED_SHARE * evidence.planned_rate_rps:
        verdict.server_overloaded = True
        verdict.findings.append(
            f"server fell behind: answered {answered_rps:.0f} req/s of the {evidence.planned_rate_rps:.0f} "
            f"planned ({100 * answered_rps / evidence.planned_rate_rps:.0f}%) while the generator sent on time")


def _judge_cache(evidence: TrialEvidence, verdict: Validity) -> None:
    cache = evidence.cache
    if cache is None:
        return
    hits, misses, errors = cache.hits, cache.misses, cache.errors
    lookups = hits + misses
    by_reason = cache.errors_by_reason or {}
    if evidence.redis_outage:
        if lookups and errors:
            verdict.findings.append(f"cache errors on {errors} of {lookups} lookups in a trial with a scheduled "
                                    "Redis outage (requests fell through to the model)")
        return
    if lookups and errors / lookups > MAX_CACHE_ERROR_FRACTION:
        detail = f" ({_kinds_text(by_reason)})" if by_reason else ""
        verdict.invalidate(f"cache errors on {errors} of {lookups} lookups ({100 * errors / lookups:.1f}% > "
                           f"{100 * MAX_CACHE_ERROR_FRACTION:.0f}%){detail}: not a cache measurement",
                           "cache_unreliable")
    if evidence.planned_hit_ratio is not None and lookups:
        achieved = hits / lookups
        if abs(achieved - evidence.planned_hit_ratio) > HIT_RATIO_TOLERANCE:
            verdict.invalidate(f"cache hit ratio {achieved:.3f}, planned {evidence.planned_hit_ratio:.2f} "
                               f"(tolerance ±{HIT_RATIO_TOLERANCE:.2f})", "cache_unreliable")
