"""What a trial's faults really did: one record per fault, in seconds after the measurement
started (the same origin as the trial's other timestamps)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FaultEvent:
    """One fault as it happened. ``injected_at_s``/``cleared_at_s`` are when it took effect and
    ended (a crash: killed, and AVAILABLE again); None when that step did not happen (the trial
    stopped first, or the step failed: ``detail["error"]`` says why)."""

    kind: str
    scheduled_at_s: float
    scheduled_duration_s: float
    injected_at_s: float | None = None
    cleared_at_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def lasted_s(self) -> float | None:
        if self.injected_at_s is None or self.cleared_at_s is None:
            return None
        return self.cleared_at_s - self.injected_at_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "lasted_s": self.lasted_s}


@dataclass
class Timeline:
    events: list[FaultEvent] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[FaultEvent]:
        return [event for event in self.events if event.kind == kind]

    def to_json(self) -> list[dict[str, Any]]:
        return [event.to_json() for event in self.events]
