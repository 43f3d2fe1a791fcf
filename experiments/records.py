"""The trial record: the one data object that flows recorder -> sweep -> analysis.

A trial is one measurement of one configuration (a point of the sweep's design) in one
repetition. The recorder fills a :class:`TrialRecord`; the sweep runner saves it atomically the
moment the trial ends; analysis reads only saved records. Latencies are never stored as
summaries: every window keeps its full HdrHistogram (microseconds, 3 significant figures,
``hdrh`` ``encode()`` text), so percentiles of a configuration come from merged histograms,
never from averaged percentiles.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 2
# Older schemas this lab still reads (upgraded on load): 1 had Validity without kinds,
# findings and warnings, and a cache without errors by reason.
READABLE_SCHEMAS = (1, 2)

# HdrHistogram settings shared by every recorder and reader (microseconds).
HDR_LOWEST_US = 1
HDR_HIGHEST_US = 3_600_000_000  # one hour
HDR_SIGNIFICANT_FIGURES = 3


@dataclass
class Window:
    """One measurement window of a trial (warm-up windows are never stored here)."""

    index: int
    start_s: float  # seconds since the trial's measurement phase began
    duration_s: float
    requests: int  # answered successfully; their latencies are in `histogram`
    errors: int
    histogram: str  # hdrh encode() of successful latencies, microseconds
    # Closed loop only: the same latencies with HdrHistogram's expected-interval correction.
    corrected_histogram: str | None = None
    # A scheduled fault touched this window (or it came before the recovery): left out of the
    # steady-state result and the stability rule (experiments/faults/phases.py).
    fault: bool = False
    # Answers by path (model / cache / fallback / mixed), and what the cache counted in this
    # window: {"hits", "misses"} and errors by reason; empty without a cache. Over windows
    # they show a fault's effect on the answer paths.
    answer_paths: dict[str, int] = field(default_factory=dict)
    cache_counts: dict[str, int] = field(default_factory=dict)
    cache_errors_by_reason: dict[str, int] = field(default_factory=dict)
    # Open loop: the arrivals per second planned for this window (a rate schedule's mean over it).
    planned_rate_rps: float | None = None


# What kind of problem made a trial invalid. Validity judges the instrument, not the server:
# a server that falls behind a load the generator delivered on time is a finding, not a defect.
InvalidKind = Literal[
    "generator_limited",  # the generator's health failed, or the rate exceeds its path's limit
    "cache_unreliable",   # a cache-on trial whose cache errored too often to be a cache measurement
    "request_errors",     # requests failed for reasons load does not cause (a 400, a bad answer)
    "no_data",            # nothing was answered or failed during the measurement
    "failed",             # the trial crashed (server, worker, set-up)
]
INVALID_KINDS: tuple[str, ...] = ("generator_limited", "cache_unreliable", "request_errors", "no_data", "failed")


@dataclass
class Validity:
    """A trial's verdict: valid or not (with one kind per reason), plus what a reader must know.

    ``findings`` are facts about the system under test that keep the trial valid (the server
    fell behind, requests timed out); ``warnings`` are doubts about the figures that do not void
    them (not stable, coordinated omission hiding stalls).
    """

    valid: bool = True
    reasons: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # parallel to ``reasons``: an InvalidKind each
    findings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    server_overloaded: bool = False  # generator healthy, but the server did not keep up

    def invalidate(self, reason: str, kind: InvalidKind = "generator_limited") -> None:
        self.valid = False
        self.reasons.append(reason)
        self.kinds.append(kind)

    @property
    def category(self) -> str:
        """One word for tables: valid, server_overloaded, or the first invalid kind."""
        if not self.valid:
            return self.kinds[0] if self.kinds else "invalid"
        return "server_overloaded" if self.server_overloaded else "valid"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Validity":
        data = dict(data)
        # Schema 1 had no kinds: its reasons are kept, their kind is unknown ("invalid").
        data.setdefault("kinds", ["invalid"] * len(data.get("reasons", [])))
        return cls(**data)


@dataclass
class TrialRecord:
    run_id: str
    trial_id: str  # unique within the run
    config_id: str  # shared by every repetition of one factor combination
    repetition: int
    factors: dict[str, Any]  # every factor's value for this trial
    seed: int
    status: Literal["ok", "failed"] = "ok"
    failure_reason: str | None = None
    started_at: str = ""  # ISO 8601, UTC
    ended_at: str = ""
    # How load was applied: {"mode": "closed"|"open", "users"|"rate_rps", "workers", ...}
    load: dict[str, Any] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    stable: bool = False  # the last 3 windows agree within sampling error (recording/stability.py)
    stable_windows: list[int] = field(default_factory=list)  # indices merged into the result
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    outstanding_at_end: int = 0  # counted as timeouts
    lateness_histogram: str | None = None  # open loop: actual minus scheduled send, microseconds
    # Per-request server timing from Server-Timing headers / gRPC trailers (hdrh text, us).
    server_queue_histogram: str | None = None
    server_compute_histogram: str | None = None
    # Prometheus scrapes before/after the trial (TF Serving's metric names), as deltas.
    server_metrics: dict[str, Any] = field(default_factory=dict)
    # Mean client-side encode / wait / decode per request, microseconds.
    client_timing_us: dict[str, float] = field(default_factory=dict)
    # {"hits", "misses", "errors", "errors_by_reason": {reason: n}} when a cache is in use;
    # requests that bypassed the cache (open breaker, error) count as misses.
    cache: dict[str, Any] | None = None
    answer_paths: dict[str, int] = field(default_factory=dict)  # model / cache / fallback
    # server_cpu_s, server_peak_rss_bytes, generator_cpu_percent, redis_cpu_s, steal_percent,
    # energy_joules, energy_method ("rapl" | "estimate"), placement {...}
    resources: dict[str, Any] = field(default_factory=dict)
    # Load-generator health: worker_cpu_percent [per worker], loop_lag_p99_us, lateness_p50_us,
    # lateness_p99_us, late_send_fraction (> 1 ms late), steal_percent, timer, expected_interval_us.
    generator: dict[str, Any] = field(default_factory=dict)
    validity: Validity = field(default_factory=Validity)
    schema_version: int = SCHEMA_VERSION
    # Scheduled faults as they happened (FaultEvent.to_json() plus recovered_at_s / recovery_s),
    # seconds since the measurement started; [] for a trial without faults.
    faults: list[dict[str, Any]] = field(default_factory=list)
    # Before / during / after (p99_ms, availability, answered, errors, windows), the pre-fault
    # band, fault_windows and recovery_s (experiments/faults/phases.py); {} without faults.
    fault_summary: dict[str, Any] = field(default_factory=dict)
    # An A/B test ([ab] in the spec): per arm ("stable", "canary", "baseline") over the result
    # windows: requests, errors, latency histogram (hdrh text, us) with p50_ms / p99_ms from it,
    # pupdates_scored / pupdates_excluded, mean_likes, mean_predicted, mae
    # (experiments/recording/arms.py); {} without an A/B test.
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Requests the server refused at once rather than queue (503 / UNAVAILABLE: --lab_max_queue,
    # a full batching queue): requests, share of attempts, and refusal vs answer latency p50/p99 (us).
    shed: dict[str, Any] = field(default_factory=dict)
    # Events during the trial, e.g. {"at_s", "event": "replica_added" | "replica_removed", ...}
    # from a reactive scaling policy; seconds since the measurement start.
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def result_windows(self) -> list[Window]:
        """The windows merged into the result: the stable ones, or every window when none was
        judged stable (a fault trial: every window no fault touched)."""
        stable = set(self.stable_windows)
        return ([w for w in self.windows if w.index in stable] or [w for w in self.windows if not w.fault]
                or self.windows)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<record>") -> "TrialRecord":
        version = data.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise ValueError(f"{source}: schema_version {version!r}, this lab reads {READABLE_SCHEMAS}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{source}: unknown fields {sorted(unknown)}")
        data = dict(data)
        data["windows"] = [Window(**w) for w in data.get("windows", [])]
        data["validity"] = Validity.from_dict(data.get("validity", {}))
        data["schema_version"] = SCHEMA_VERSION  # upgraded in memory; the file is never rewritten
        return cls(**data)

    @classmethod
    def read(cls, path: Path) -> "TrialRecord":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not a trial record ({error})") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the whole new one, never half."""
        write_atomically(Path(path), self.to_json())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
