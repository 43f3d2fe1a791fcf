"""Load levels that mean the same absolute load for every configuration of a sweep.

``calibrate_capacity`` measures one reference configuration once: a closed loop at growing
concurrency until throughput stops growing (less than ``min_gain`` over two steps, Model
Analyzer's plateau rule, shortened). Its best throughput is the capacity; ``light``,
``medium`` and ``high`` are open-loop rates at fixed fractions of it, so every configuration
of the sweep meets the same arrivals per second. The result is saved as JSON with the sweep.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from poochlab.experiments.load.settings import LoadSettings
from poochlab.experiments.load.trial import measure_trial
from poochlab.experiments.load.workload import Workload
from poochlab.experiments.recording.histograms import merge_encoded
from poochlab.experiments.records import TrialRecord, write_atomically

LOAD_LEVELS = {"light": 0.25, "medium": 0.50, "high": 0.85}
CALIBRATION_SCHEMA = 1


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
        if data.get("schema") != CALIBRATION_SCHEMA:
            raise ValueError(f"{path}: schema {data.get('schema')!r}, this lab reads {CALIBRATION_SCHEMA}")
        missing = {"reference", "capacity_rps", "steps"} - set(data)
        if missing:
            raise ValueError(f"{path}: missing fields {sorted(missing)}")
        if not data["capacity_rps"] > 0:
            raise ValueError(f"{path}: capacity_rps must be positive (got {data['capacity_rps']!r})")
        data["steps"] = tuple(data["steps"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)


def calibrate_capacity(client: Any, workload: Workload, *, reference: str,
                       users_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                       window_s: float = 2.0, warmup_s: float = 1.0, min_gain: float = 0.05,
                       workers: int = 1, seed: int = 0, server_pid: int | None = None,
                       progress: Callable[[dict[str, Any]], None] | None = None) -> CapacityCalibration:
    """Find the reference configuration's capacity (best valid closed-loop throughput).

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
        measure_trial(settings, client, workload, record, server_pid=server_pid)
        if record.status != "ok":
            raise RuntimeError(f"calibration step with {users} users failed: {record.failure_reason}")
        measured = record.resources.get("measured_s") or len(record.windows) * window_s
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
