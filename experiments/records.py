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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Self, Sequence

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
    # The fallback's circuit breaker in this window: {"opened", "probes", "closed"}; {} without one.
    breaker_counts: dict[str, int] = field(default_factory=dict)
    # Keys this version does not know (a newer lab's): kept as read and written back.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out


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


# A value as it sits in a record's JSON (what a sub-record keeps without knowing its meaning).
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


class _SubRecord:
    """One dict of a saved record, as a typed dataclass with one owner (each class says which).

    The JSON keeps the old dict's keys: ``to_dict`` writes the known fields (a field that is
    None is left out, as the old writers left out what did not apply) and then ``extra``, the
    keys this version of the lab does not know (a newer lab's, another experiment's), so a
    load/save round trip keeps them. A new field is a new attribute here, not a new key in
    ``extra``.
    """

    extra: dict[str, JsonValue]
    __dataclass_fields__: ClassVar[dict[str, Any]]  # every subclass is a dataclass

    if TYPE_CHECKING:  # each subclass's dataclass __init__ takes its fields by name
        def __init__(self, **values: Any) -> None: ...

    def to_dict(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<record>") -> Self:
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: {cls.__name__} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


@dataclass
class LoadRecord(_SubRecord):
    """How load was applied (``TrialRecord.load``).

    Owner: experiments/load/trial.py (``measure_trial``), from ``LoadSettings.as_record()`` plus
    the client, workload and the stability note; the sweep adds only ``generator_floor`` and
    ``search`` (experiments/sweep/trial_execution.py). Fields that do not apply (users in an open
    loop, rate_rps in a closed one) are None and not written.
    """

    mode: str | None = None  # "closed" | "open"
    users: int | None = None
    rate_rps: float | None = None
    pacing: float | None = None
    window_s: float | None = None
    warmup_s: float | None = None
    min_windows: int | None = None
    max_windows: int | None = None
    workers: int | None = None
    seed: int | None = None
    pin_cpus: bool | None = None
    drain_s: float | None = None
    client: dict[str, JsonValue] | None = None  # the ClientConfig, described
    workload: dict[str, JsonValue] | None = None  # Workload.describe()
    stability: str | None = None  # why the result windows were judged (un)stable
    late_windows: dict[str, str] | None = None  # window index -> why the generator was held up
    generator_floor: str | None = None  # sweep: the floor record's path, relative to the run
    search: dict[str, JsonValue] | None = None  # sweep: this rate-search step (step, of, budget_ms, ...)
    rate_schedule: list[dict[str, JsonValue]] | None = None  # open loop: [{at_s, rps, ramp_s}, ...]
    users_schedule: list[dict[str, JsonValue]] | None = None  # closed loop: [{at_s, users}, ...]
    # what the result's p99 rests on: threshold_us, requests_above, events (recording/stability.py)
    p99_support: dict[str, float | int | None] | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)


@dataclass
class ResourcesRecord(_SubRecord):
    """What the trial cost (``TrialRecord.resources``).

    Owner: experiments/recording/resources.py (``ResourceMonitor.stop``: wall_s to
    energy_watts_per_core); experiments/load/trial.py adds measured_s, steal_percent and
    placement; the sweep adds server_starts_so_far, server_resources and, for a crashed trial,
    traceback.
    """

    wall_s: float | None = None
    server_cpu_s: float | None = None
    server_peak_rss_bytes: int | None = None
    generator_cpu_s: float | None = None
    generator_cpu_percent: list[float] | None = None  # per worker
    redis_cpu_s: float | None = None
    energy_joules: float | None = None
    energy_method: str | None = None  # "rapl" | "estimate"
    energy_watts_per_core: float | None = None  # the estimate's assumption
    measured_s: float | None = None
    steal_percent: float | None = None
    placement: dict[str, JsonValue] | None = None  # recording/placement.py
    server_starts_so_far: int | None = None
    server_resources: str | None = None  # where the server figures come from, or why none
    traceback: str | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)


@dataclass
class GeneratorHealth(_SubRecord):
    """The load generator's health (``TrialRecord.generator``): what the verdict judges it by.

    Owner: experiments/load/trial.py (``_fill_record``), from the workers' final reports and the
    merged loop-lag and lateness histograms. Latencies in microseconds.
    """

    worker_cpu_percent: list[float] | None = None
    loop_lag_p99_us: float | None = None
    loop_lag_max_us: float | None = None
    steal_percent: float | None = None
    timer: str | None = None  # PreciseTimer kind
    expected_interval_us: int | None = None
    sender_greenlets: int | None = None
    lateness_p50_us: float | None = None  # open loop only
    lateness_p99_us: float | None = None
    late_send_fraction: float | None = None  # sends more than health.LATE_SEND_US late
    extra: dict[str, JsonValue] = field(default_factory=dict)


@dataclass
class CacheCounts(_SubRecord):
    """The cache client's counts over the measurement (``TrialRecord.cache``).

    Owner: the worker (experiments/load/worker.py) counts them; experiments/load/trial.py adds
    the workers' counts up. Requests that bypassed the cache (open breaker, error) are misses.
    Schema 1 had no errors_by_reason.
    """

    hits: int = 0
    misses: int = 0
    errors: int = 0
    errors_by_reason: dict[str, int] | None = None  # None: not recorded (schema 1)
    extra: dict[str, JsonValue] = field(default_factory=dict)

    @classmethod
    def total(cls, parts: Sequence[CacheCounts]) -> CacheCounts:
        """Several workers' counts added up, errors by reason included."""
        reasons: dict[str, int] = {}
        for part in parts:
            for reason, n in (part.errors_by_reason or {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
        return cls(hits=sum(p.hits for p in parts), misses=sum(p.misses for p in parts),
                   errors=sum(p.errors for p in parts), errors_by_reason=reasons)

    def since(self, before: CacheCounts) -> CacheCounts:
        """What was counted between ``before`` and these counts (reasons that did not grow left out)."""
        reasons = before.errors_by_reason or {}
        return CacheCounts(hits=self.hits - before.hits, misses=self.misses - before.misses,
                           errors=self.errors - before.errors,
                           errors_by_reason={r: n - reasons.get(r, 0) for r, n in (self.errors_by_reason or {}).items()
                                             if n - reasons.get(r, 0)})


@dataclass
class ServerMetricsRecord:
    """The server's Prometheus metrics over the trial (``TrialRecord.server_metrics``).

    Owner: experiments/load/trial.py (deltas from experiments/recording/prometheus.py
    ``histogram_deltas``, keyed by TF Serving's metric names, and scrape errors); the sweep adds
    ``unavailable`` when the server has no meaningful metrics. In the JSON the metric names sit
    beside the two notes, as before.
    """

    deltas: dict[str, dict[str, JsonValue]] = field(default_factory=dict)
    scrape_errors: list[str] | None = None
    unavailable: str | None = None

    def to_dict(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = dict(self.deltas)
        if self.scrape_errors is not None:
            out["scrape_errors"] = list(self.scrape_errors)
        if self.unavailable is not None:
            out["unavailable"] = self.unavailable
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<record>") -> "ServerMetricsRecord":
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: server_metrics must be a JSON object, got {type(data).__name__}")
        return cls(deltas={k: v for k, v in data.items() if k not in ("scrape_errors", "unavailable")},
                   scrape_errors=data.get("scrape_errors"), unavailable=data.get("unavailable"))


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
    load: LoadRecord = field(default_factory=LoadRecord)
    windows: list[Window] = field(default_factory=list)
    stable: bool = False  # the last 3 windows agree within sampling error (recording/stability.py)
    stable_windows: list[int] = field(default_factory=list)  # indices merged into the result
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    outstanding_at_end: int = 0  # counted as timeouts
    lateness_histogram: str | None = None  # open loop: actual minus scheduled send, microseconds
    # Per-request server timing from Server-Timing headers / gRPC trailers (hdrh text, us).
    server_queue_histogram: str | None = None
    server_compute_histogram: str | None = None
    server_metrics: ServerMetricsRecord = field(default_factory=ServerMetricsRecord)
    # Mean client-side encode / wait / decode per request, microseconds.
    client_timing_us: dict[str, float] = field(default_factory=dict)
    cache: CacheCounts | None = None  # None: no cache in use
    answer_paths: dict[str, int] = field(default_factory=dict)  # model / cache / fallback
    resources: ResourcesRecord = field(default_factory=ResourcesRecord)
    generator: GeneratorHealth = field(default_factory=GeneratorHealth)
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
    # Events during the trial from a reactive scaling policy (sweep/scaling.py): {"at_s", "event":
    # "scale_add_decided" | "scale_remove_decided" | "replica_joined" | "replica_left" |
    # "replica_add_failed", ...}, "after_trial" on removals once it ended; seconds since the
    # measurement start.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    # Top-level keys this version of the lab does not know (a newer lab's fields): kept as read
    # and written back, so a load/save round trip loses nothing.
    extra: dict[str, JsonValue] = field(default_factory=dict)

    def result_windows(self) -> list[Window]:
        """The windows merged into the result: the stable ones, or every window when none was
        judged stable (a fault trial: every window no fault touched)."""
        stable = set(self.stable_windows)
        return ([w for w in self.windows if w.index in stable] or [w for w in self.windows if not w.fault]
                or self.windows)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        data["windows"] = [w.to_dict() for w in self.windows]
        data["validity"] = asdict(self.validity)
        for name in _SUB_RECORDS:
            data[name] = getattr(self, name).to_dict()
        data["cache"] = self.cache.to_dict() if self.cache is not None else None
        data.update(self.extra)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<record>") -> "TrialRecord":
        version = data.get("schema_version")
        if version not in READABLE_SCHEMAS:
            raise ValueError(f"{source}: schema_version {version!r}, this lab reads {READABLE_SCHEMAS}")
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = {k: v for k, v in data.items() if k not in known}
        data = {k: v for k, v in data.items() if k in known}
        data["windows"] = [Window.from_dict(w) for w in data.get("windows", [])]
        data["validity"] = Validity.from_dict(data.get("validity", {}))
        for name, kind in _SUB_RECORDS.items():
            data[name] = kind.from_dict(data.get(name) or {}, source=f"{source}: {name}")
        if data.get("cache") is not None:
            data["cache"] = CacheCounts.from_dict(data["cache"], source=f"{source}: cache")
        data["extra"] = extra
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


# TrialRecord's dict fields that are sub-records (cache, which may be None, is handled apart).
_SUB_RECORDS: dict[str, type[LoadRecord] | type[ResourcesRecord] | type[GeneratorHealth] | type[ServerMetricsRecord]] = {
    "load": LoadRecord, "resources": ResourcesRecord, "generator": GeneratorHealth, "server_metrics": ServerMetricsRecord}


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
