"""Load levels that mean the same absolute load for every configuration of a sweep, and that
the rig can actually drive.

Two measurements, both with the placement trials use:

- ``calibrate_capacity``: a server configuration's capacity, a closed loop at growing
  concurrency until throughput stops growing (less than ``min_gain`` over two steps, Model
  Analyzer's plateau rule, shortened). The generator shares the machine as in a trial, so this
  is what the rig can serve through that configuration (with the cache on, Redis's CPU counts).
- ``generator_limit``: a client path's own valid capacity, an open-loop rate search against the
  echo server: the highest rate at which the generator still sends on time with healthy CPU and
  event loop. A rate above it would measure the generator, not the server.

``CapacityCalibration`` keeps both; its ``capacity_rps`` is the lowest of them (``limited_by``
names which), and ``light``, ``medium`` and ``high`` are open-loop rates at fixed fractions of it,
so every configuration of the sweep meets the same arrivals per second. Saved as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load.settings import LoadSettings
from poochlab.experiments.load.trial import measure_trial
from poochlab.experiments.load.workload import Workload
from poochlab.experiments.recording.histograms import merge_encoded
from poochlab.experiments.records import TrialRecord, write_atomically

LOAD_LEVELS = {"light": 0.25, "medium": 0.50, "high": 0.85}
CALIBRATION_SCHEMA = 2
READABLE_CALIBRATION_SCHEMAS = (1, 2)  # 1: one reference capacity, no path limits


class CalibrationError(RuntimeError):
    """The rig cannot drive the load a sweep asks for; the message names the path or server."""


@dataclass(frozen=True)
class CapacityCalibration:
    """The capacity of the reference configuration and the steps that found it."""

    reference: str
    capacity_rps: float
    steps: tuple[dict[str, Any], ...]
    levels: dict[str, float] = field(default_factory=lambda: dict(LOAD_LEVELS))
    measured_at: str = ""
    # False when no step was valid (e.g. the generator itself was the bottleneck): the capacity
    # is then the best invalid step's throughput, and `notes` says why none was valid.
    valid: bool = True
    notes: tuple[str, ...] = ()
    schema: int = CALIBRATION_SCHEMA
    # What set ``capacity_rps``: "server <configuration>" or "generator <path>".
    limited_by: str = ""
    # Every capacity measured: {"configuration", "capacity_rps", "valid", "steps", "notes"} each.
    servers: tuple[dict[str, Any], ...] = ()
    # Every client path's own limit: {"path", "limit_rps", "steps"} each (see ``generator_limit``).
    generator_paths: tuple[dict[str, Any], ...] = ()

    def path_limit(self, path: str) -> float | None:
        """The highest rate ``path`` was measured to send validly (None when not measured)."""
        for entry in self.generator_paths:
            if entry["path"] == path:
                return float(entry["limit_rps"])
        return None

    def rate_for(self, level: str) -> float:
        """The open-loop rate (requests/s) of a named load level."""
        if level not in self.levels:
            raise ValueError(f"unknown load level {level!r}; known: {sorted(self.levels)}")
        return self.levels[level] * self.capacity_rps

    def settings_for(self, level: str, base: LoadSettings) -> LoadSettings:
        """``base`` turned into an open loop at the level's rate."""
        return dataclasses.replace(base, mode="open", rate_rps=self.rate_for(level))

    def save(self, path: Path | str) -> None:
        write_atomically(Path(path), json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path | str) -> "CapacityCalibration":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a capacity calibration ({error})") from None
        if data.get("schema") not in READABLE_CALIBRATION_SCHEMAS:
            raise ValueError(f"{path}: schema {data.get('schema')!r}, this lab reads {READABLE_CALIBRATION_SCHEMAS}")
        missing = {"reference", "capacity_rps", "steps"} - set(data)
        if missing:
            raise ValueError(f"{path}: missing fields {sorted(missing)}")
        if not data["capacity_rps"] > 0:
            raise ValueError(f"{path}: capacity_rps must be positive (got {data['capacity_rps']!r})")
        data["steps"] = tuple(data["steps"])
        data["notes"] = tuple(data.get("notes", ()))
        data["servers"] = tuple(data.get("servers", ()))
        data["generator_paths"] = tuple(data.get("generator_paths", ()))
        data["schema"] = CALIBRATION_SCHEMA
        return cls(**data)


def calibrate_capacity(client: ClientConfig, workload: Workload, *, reference: str,
                       users_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                       window_s: float = 2.0, warmup_s: float = 1.0, min_gain: float = 0.05,
                       workers: int = 1, seed: int = 0, server_pid: int | None = None,
                       redis_pid: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> CapacityCalibration:
    """Find the reference configuration's capacity (best valid closed-loop throughput): users
    double until throughput stops growing, or until the generator itself is saturated after a
    valid step (more users would only measure the generator).

    When no step is valid the best step is used and the calibration says ``valid=False``
    with every step's reasons, instead of failing the sweep.
    """
    steps: list[dict[str, Any]] = []
    best = 0.0
    for users in users_steps:
        settings = LoadSettings(mode="closed", users=max(users, workers), window_s=window_s, warmup_s=warmup_s,
                                min_windows=3, max_windows=3, workers=workers, seed=seed)
        record = TrialRecord(run_id="calibration", trial_id=f"users-{users}", config_id=reference,
                             repetition=0, factors={"users": users}, seed=seed)
        measure_trial(settings, client, workload, record, server_pid=server_pid, redis_pid=redis_pid)
        if record.status != "ok":
            raise RuntimeError(f"calibration step with {users} users failed: {record.failure_reason}")
        measured = record.resources.measured_s or len(record.windows) * window_s
        throughput = sum(w.requests for w in record.windows) / measured
        latency = merge_encoded(w.histogram for w in record.windows)
        step = {"users": users, "throughput_rps": throughput,
                "p99_us": float(latency.get_value_at_percentile(99)) if latency.get_total_count() else None,
                "valid": record.validity.valid, "reasons": list(record.validity.reasons),
                "errors": sum(record.errors_by_kind.values())}
        steps.append(step)
        if progress is not None:
            progress(step)
        if record.validity.valid:
            best = max(best, throughput)
        elif best > 0 and "generator_limited" in record.validity.kinds:
            break  # the generator is saturated: more users would only load it more
        if len(steps) >= 3 and steps[-1]["throughput_rps"] < (1 + min_gain) * steps[-3]["throughput_rps"]:
            break  # two steps without a real gain: the plateau
    notes: tuple[str, ...] = ()
    if best <= 0:
        best = max(step["throughput_rps"] for step in steps)
        notes = tuple(f"{step['users']} users: {'; '.join(step['reasons'])}" for step in steps)
    if best <= 0:
        raise RuntimeError(f"calibration of {reference!r}: no request was answered in any step: {steps}")
    return CapacityCalibration(reference=reference, capacity_rps=best, steps=tuple(steps),
                               measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               valid=not notes, notes=notes)


@dataclass(frozen=True)
class PathLimit:
    """How fast one client path sends validly against the echo server.

    ``bounded`` False: the path was valid at the highest rate the sweep needs (``limit_rps``
    is that rate, a lower bound); True: ``limit_rps`` is the highest valid rate found below an
    invalid one (0 when not even ``floor_rps`` was valid)."""

    path: str
    limit_rps: float
    bounded: bool
    steps: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "limit_rps": self.limit_rps, "bounded": self.bounded, "steps": list(self.steps)}


def generator_limit(client: ClientConfig, workload: Workload, *, path: str, target_rps: float,
                    floor_rps: float = 50.0, refine_steps: int = 2, window_s: float = 1.0,
                    warmup_s: float = 0.5, seed: int = 0, workers_at: Callable[[float], int] = lambda rate: 1,
                    before_step: Callable[[], int | None] | None = None,
                    progress: Callable[[dict[str, Any]], None] | None = None) -> PathLimit:
    """Can ``client``'s path send ``target_rps`` validly? If not, how much can it: halve until
    valid, then bisect geometrically ``refine_steps`` times between the valid and invalid rates.
    A step is valid when the generator stayed healthy (CPU, loop lag, lateness) and the echo
    answered at least 90% of the arrivals (a slower echo is named in the step's reasons).
    ``workers_at(rate)``: the generator processes a trial at that rate would use. A client with a
    cache keeps it (the generator runs the cache client too); ``before_step`` then readies the
    cache (flushes Redis) and returns Redis's pid for the placement."""
    from poochlab.experiments.load.generator_floor import measure_generator_floor

    steps: list[dict[str, Any]] = []

    def valid_at(rate: float) -> bool:
        settings = LoadSettings(mode="open", rate_rps=rate, window_s=window_s, warmup_s=warmup_s,
                                min_windows=2, max_windows=2, seed=seed, workers=workers_at(rate))
        redis_pid = before_step() if before_step is not None else None
        record = measure_generator_floor(settings, client, workload, run_id="calibration",
                                         with_cache=client.cache is not None, redis_pid=redis_pid)
        verdict = record.validity
        ok = record.status == "ok" and verdict.valid and not verdict.server_overloaded
        reasons = list(verdict.reasons) + [f"echo server: {finding}" for finding in verdict.findings]
        step = {"rate_rps": rate, "valid": ok, "reasons": reasons, "workers": settings.workers,
                "lateness_p99_us": record.generator.lateness_p99_us,
                "generator_cpu_percent": record.generator.worker_cpu_percent,
                "echo_cpu_s": record.resources.server_cpu_s}
        steps.append(step)
        if progress is not None:
            progress({"path": path, **step})
        return ok

    if valid_at(target_rps):
        return PathLimit(path=path, limit_rps=target_rps, bounded=False, steps=tuple(steps))
    good, bad = 0.0, target_rps
    rate = target_rps
    while rate / 2 >= floor_rps:
        rate /= 2
        if valid_at(rate):
            good = rate
            break
        bad = rate
    if good:
        for _ in range(refine_steps):
            middle = float(f"{math.sqrt(good * bad):.3g}")
            if valid_at(middle):
                good = middle
            else:
                bad = middle
    return PathLimit(path=path, limit_rps=good, bounded=True, steps=tuple(steps))


def combined(reference: str, servers: dict[str, CapacityCalibration], paths: list[PathLimit],
             levels: dict[str, float]) -> CapacityCalibration:
    """One calibration whose capacity is the lowest server capacity or path limit measured."""
    candidates = [(c.capacity_rps, f"server {name}") for name, c in servers.items()]
    candidates += [(p.limit_rps, f"generator {p.path}") for p in paths if p.bounded]
    capacity, limited_by = min(candidates)
    if capacity <= 0:
        failed = [f"{p.path}: {s['rate_rps']:.0f} req/s: {'; '.join(s['reasons'])}" for p in paths
                  if p.bounded and p.limit_rps <= 0 for s in p.steps]
        raise CalibrationError(f"calibration: {limited_by} could not carry any load validly on this machine "
                               f"(is something else using its CPUs?): {' | '.join(failed)}")
    first = servers[reference] if reference in servers else next(iter(servers.values()))
    notes = tuple(f"server {name}: {note}" for name, c in servers.items() for note in c.notes)
    return CapacityCalibration(
        reference=reference, capacity_rps=capacity, steps=first.steps, levels=dict(levels),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        valid=all(c.valid for c in servers.values()), notes=notes, limited_by=limited_by,
        servers=tuple({"configuration": name, "capacity_rps": c.capacity_rps, "valid": c.valid,
                       "steps": list(c.steps), "notes": list(c.notes)} for name, c in servers.items()),
        generator_paths=tuple(p.as_dict() for p in paths))


def paths_only(paths: list[PathLimit]) -> CapacityCalibration:
    """A calibration holding only the paths' limits (a sweep with explicit rates, no levels)."""
    lowest = min(paths, key=lambda limit: limit.limit_rps)
    return CapacityCalibration(reference="(explicit rates)", capacity_rps=max(lowest.limit_rps, 1e-9), steps=(),
                               measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               limited_by=f"generator {lowest.path}" if lowest.bounded else "",
                               generator_paths=tuple(limit.as_dict() for limit in paths))
