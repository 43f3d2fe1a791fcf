"""One trial's numbers: decode its windows and derive the per-trial row of the tidy table.

Only the windows the recorder declared stable are merged into the trial's result (perf_analyzer's
rule); a trial that never became stable merges all its windows and says so in ``notes``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poochlab.experiments.analysis.bucket_counts import add_counts, decode_counts, mean_us, percentile_us, summary_ms
from poochlab.experiments.records import CacheCounts, TrialRecord

NAN = float("nan")


@dataclass
class DecodedTrial:
    record: TrialRecord
    window_counts: dict[int, np.ndarray]  # window index -> bucket counts
    merged_indices: list[int]
    notes: list[str] = field(default_factory=list)
    # Closed loop: the merged windows' coordinated-omission-corrected counts, when all have one.
    corrected_counts: np.ndarray | None = None

    @property
    def merged_windows(self) -> np.ndarray:
        """The merged windows' count vectors as rows (the bootstrap's blocks)."""
        if not self.merged_indices:
            return np.zeros((0, 0), dtype=np.int64)
        return np.vstack([self.window_counts[i] for i in self.merged_indices])

    @property
    def merged_counts(self) -> np.ndarray:
        rows = self.merged_windows
        return rows.sum(axis=0) if len(rows) else np.zeros(0, dtype=np.int64)


def decode_trial(record: TrialRecord, source: str) -> DecodedTrial:
    """Decode every window histogram; a bad one raises ValueError naming file and window."""
    counts = {
        window.index: decode_counts(window.histogram, f"{source}: window {window.index}")
        for window in record.windows
    }
    notes: list[str] = []
    known = [i for i in record.stable_windows if i in counts]
    merged = known or sorted(counts)
    if merged and record.status == "ok" and not record.stable:
        # The recorder merges every window of a trial that never settled; say so beside its numbers.
        notes.append(f"not stable: {len(merged)} of {len(counts)} windows merged")
    corrected = [(w.index, w.corrected_histogram) for w in record.windows
                 if w.index in set(merged) and w.corrected_histogram]
    corrected_counts = (
        add_counts(decode_counts(text, f"{source}: window {index} corrected") for index, text in corrected)
        if corrected and len(corrected) == len(merged)
        else None
    )
    return DecodedTrial(record=record, window_counts=counts, merged_indices=merged, notes=notes,
                        corrected_counts=corrected_counts)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else NAN


def _histogram_ms(encoded: str | None, source: str) -> tuple[float, float]:
    """(mean, p99) of an optional server-timing histogram, ms."""
    if not encoded:
        return NAN, NAN
    counts = decode_counts(encoded, source)
    return mean_us(counts) / 1000.0, percentile_us(counts, 99.0) / 1000.0


def trial_row(trial: DecodedTrial, source: str) -> dict[str, Any]:
    """Every metric of one trial, ms / rps / ratios; factors are added by the caller."""
    record = trial.record
    merged = [w for w in record.windows if w.index in set(trial.merged_indices)]
    requests = sum(w.requests for w in merged)
    errors = sum(w.errors for w in merged)
    duration = sum(w.duration_s for w in merged)
    counts = trial.merged_counts
    row: dict[str, Any] = summary_ms(counts) if len(counts) else summary_ms(np.zeros(1, dtype=np.int64))

    row["p99_corrected_ms"] = (
        percentile_us(trial.corrected_counts, 99.0) / 1000.0 if trial.corrected_counts is not None else NAN
    )
    row["co_hiding_stalls"] = hides_stalls(row["p99_ms"], row["p99_corrected_ms"])
    row["p99_tail_requests"] = tail_count(int(counts.sum()) if len(counts) else 0, 99.0)
    # the tail events those requests form (answers released together by one stall count once)
    events = (record.load.p99_support or {}).get("events")
    row["p99_tail_events"] = float(events) if isinstance(events, (int, float)) else NAN
    queue_mean, queue_p99 = _histogram_ms(record.server_queue_histogram, f"{source}: server_queue_histogram")
    compute_mean, compute_p99 = _histogram_ms(record.server_compute_histogram, f"{source}: server_compute_histogram")
    lateness = record.lateness_histogram
    row.update(
        requests=requests,
        errors=errors,
        windows_total=len(record.windows),
        windows_merged=len(merged),
        stable=bool(record.stable),
        duration_s=duration,
        throughput_rps=_ratio(requests, duration),
        error_rate=_ratio(errors, requests + errors),
        outstanding_at_end=record.outstanding_at_end,
        fallback_rate=_ratio(record.answer_paths.get("fallback", 0), sum(record.answer_paths.values())),
        # Server timing covers only the requests the model answered (not cache hits or fallbacks).
        model_answer_share=(
            _ratio(record.answer_paths.get("model", 0), sum(record.answer_paths.values())) if record.answer_paths else 1.0
        ),
        cache_hits=record.cache.hits if record.cache is not None else NAN,
        cache_misses=record.cache.misses if record.cache is not None else NAN,
        cache_errors=cache_errors(record.cache),
        cache_errors_by_reason=errors_by_reason_text(record.cache),
        # "_achieved": the sweep's factor cache_hit_ratio is the planned one.
        cache_hit_ratio_achieved=(
            _ratio(record.cache.hits, record.cache.hits + record.cache.misses)
            if record.cache is not None
            else NAN
        ),
        queue_mean_ms=queue_mean,
        queue_p99_ms=queue_p99,
        compute_mean_ms=compute_mean,
        compute_p99_ms=compute_p99,
        lateness_p99_ms=(
            percentile_us(decode_counts(lateness, f"{source}: lateness_histogram"), 99.0) / 1000.0 if lateness else NAN
        ),
    )
    for part in ("encode", "wait", "decode"):
        # The recorder's keys are "encode_us" etc.; plain "encode" is read too.
        value = record.client_timing_us.get(f"{part}_us", record.client_timing_us.get(part))
        row[f"client_{part}_ms"] = value / 1000.0 if isinstance(value, (int, float)) else NAN
    resources = record.resources.to_dict()  # every figure by name, as the saved record holds them
    for key in ("server_cpu_s", "server_peak_rss_bytes", "generator_cpu_percent", "redis_cpu_s", "steal_percent", "energy_joules"):
        figure = resources.get(key)
        row[key] = float(figure) if isinstance(figure, (int, float)) else NAN
    row["energy_method"] = str(resources.get("energy_method") or "")
    row["energy_per_request_mj"] = _ratio(row["energy_joules"] * 1000.0, sum(w.requests for w in record.windows))
    row.update(breakdown_ms(row))
    return row


# A corrected p99 above this multiple of the measured one: coordinated omission hides stalls.
CO_HIDING_FACTOR = 2.0


def hides_stalls(p99_ms: float, corrected_p99_ms: float) -> bool:
    """True when the coordinated-omission-corrected p99 is more than twice the measured p99.

    A closed-loop generator waits for each answer, so a stall delays the requests it would have
    sent, and they never show; the corrected histogram adds them back.
    """
    if math.isnan(p99_ms) or math.isnan(corrected_p99_ms) or p99_ms <= 0:
        return False
    return corrected_p99_ms > CO_HIDING_FACTOR * p99_ms


def tail_count(requests: int, percentile: float) -> int:
    """How many requests lie above a percentile of ``requests``: n x (1 - p). A p99 resting on a
    handful of requests is imprecise whatever its interval says."""
    return int(math.floor(requests * (1.0 - percentile / 100.0) + 1e-9))


def cache_errors(cache: CacheCounts | None) -> float:
    if cache is None:
        return NAN
    return float(cache.errors) if isinstance(cache.errors, (int, float)) else NAN


def errors_by_reason_text(cache: CacheCounts | None) -> str:
    """The cache's errors by reason as compact JSON ({} when none, "" when not recorded)."""
    if cache is None or not isinstance(cache.errors_by_reason, dict):
        return ""
    return json.dumps({str(k): int(v) for k, v in cache.errors_by_reason.items()}, sort_keys=True)


def breakdown_ms(row: dict[str, Any]) -> dict[str, float]:
    """A request's time: the client's own encode + decode, and the mean latency split into
    network (and the rest), server queue and compute.

    The latency runs on the wire (from the request's send, or its scheduled time, to the answer's
    arrival: load/sender_base.py ``measured_span``), so the client's encoding and decoding lie
    outside it and are a part of their own; what the server does not account for is network and
    server overhead. Server times are per request the model answered, so they are weighted by
    that share (a cache hit costs the server nothing). Without server timing the queue and
    compute parts are NaN and "network" holds the whole latency.
    """
    mean = row.get("mean_ms", NAN)
    client = sum(v for v in (row.get("client_encode_ms", NAN), row.get("client_decode_ms", NAN)) if not math.isnan(v))
    share = row.get("model_answer_share", 1.0)
    share = 1.0 if share is None or math.isnan(share) else share
    queue = row.get("queue_mean_ms", NAN) * share
    compute = row.get("compute_mean_ms", NAN) * share
    server = sum(v for v in (queue, compute) if not math.isnan(v))
    return {
        "breakdown_client_ms": client,
        "breakdown_network_ms": max(mean - server, 0.0) if not math.isnan(mean) else NAN,
        "breakdown_queue_ms": queue,
        "breakdown_compute_ms": compute,
    }
