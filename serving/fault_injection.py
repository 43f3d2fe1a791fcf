"""The lab's own fault injection: a slow or failing model, on demand (``--lab_fault_*``).

Off by default. When on, each Predict, Classify and Regress request (REST and gRPC; each task
of a MultiInference) draws, from one seeded generator, whether it is delayed by
``--lab_fault_delay_ms`` (with probability ``--lab_fault_delay_fraction``) and whether it
fails with ``--lab_fault_error_code`` (probability ``--lab_fault_error_fraction``), after the
request was checked and just before the model would run. A delay on REST is an awaited sleep
on the event loop, on gRPC a sleep of the RPC's own thread: neither holds up other requests.

The front ends hold the current :class:`FaultInjector` in an attribute ``fault`` that is None
while no fault is set, so the path without faults costs one attribute test.
``--lab_fault_admin`` adds ``GET/POST/DELETE /lab/faults`` on the REST port to read, set and
clear the plan while the server runs (a scheduled "slow model for N seconds").
TF Serving has none of this; the launchers of real TF Serving refuse these flags.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from poochlab.serving.status import Code, ServingError

ADMIN_PATH = "/lab/faults"
_PLAN_KEYS = ("delay_ms", "delay_fraction", "error_code", "error_fraction", "seed")


@dataclass(frozen=True)
class FaultPlan:
    """What to do to requests; ``enabled`` is False for the plan that does nothing."""

    delay_ms: float = 0.0
    delay_fraction: float = 1.0
    error_code: str = ""  # a TF status name (UNAVAILABLE, ...); "" for no errors
    error_fraction: float = 1.0
    seed: int = 0

    @property
    def enabled(self) -> bool:
        return (self.delay_ms > 0 and self.delay_fraction > 0) or (bool(self.error_code) and self.error_fraction > 0)

    @classmethod
    def from_json(cls, data: object, source: str = ADMIN_PATH) -> "FaultPlan":
        """A plan from a JSON object with the keys of ``--lab_fault_*`` (without the prefix)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: the body must be a JSON object with keys {', '.join(_PLAN_KEYS)}")
        unknown = sorted(set(data) - set(_PLAN_KEYS))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_PLAN_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            wanted = str if key == "error_code" else int if key == "seed" else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise ValueError(f"{source}: {key} must be a {'string' if key == 'error_code' else 'number'}, got {value!r}")
            values[key] = value
        plan = cls(**values)
        check_plan(plan, f"{source}: ")
        return plan

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_plan(plan: FaultPlan, prefix: str = "") -> None:
    """ValueError naming the setting (``prefix`` + its name) when ``plan`` cannot be applied."""
    for name in ("delay_fraction", "error_fraction"):
        value = getattr(plan, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{prefix}{name} must be between 0 and 1, got {value}")
    if plan.delay_ms < 0:
        raise ValueError(f"{prefix}delay_ms must not be negative, got {plan.delay_ms}")
    if plan.error_code and (plan.error_code not in Code.__members__ or plan.error_code == "OK"):
        names = ", ".join(c.name for c in Code if c is not Code.OK)
        raise ValueError(f"{prefix}error_code {plan.error_code!r} is not a TF status name other than OK ({names})")


class FaultInjector:
    """Draws each request's fault from the plan's seeded generator (shared by all threads)."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._random = random.Random(plan.seed)
        self._lock = threading.Lock()  # gRPC threads draw concurrently; keep the sequence whole
        self._delay_s = plan.delay_ms / 1000.0 if plan.delay_ms > 0 else 0.0
        self._code = Code[plan.error_code] if plan.error_code else None
        self.counts = {"delayed": 0, "failed": 0}

    def _draw(self) -> tuple[float, ServingError | None]:
        with self._lock:
            delay = self._delay_s if self._delay_s and self._random.random() < self.plan.delay_fraction else 0.0
            fail = self._code is not None and self._random.random() < self.plan.error_fraction
            self.counts["delayed"] += delay > 0
            self.counts["failed"] += fail
        error = ServingError(self._code, f"Fault injected by the lab's server (--lab_fault_error_code={self._code.name})") \
            if fail and self._code is not None else None
        return delay, error

    async def before_model(self) -> None:
        """On the event loop: sleep (awaited) and/or raise the injected error."""
        delay, error = self._draw()
        if delay:
            await asyncio.sleep(delay)
        if error is not None:
            raise error

    def before_model_blocking(self) -> None:
        """On a gRPC handler thread: sleep this thread and/or raise the injected error."""
        delay, error = self._draw()
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error


class LabFaults:
    """The current plan, pushed to every front end's ``fault`` attribute when it changes."""

    def __init__(self, plan: FaultPlan) -> None:
        self._targets: list[Any] = []
        self._injector: FaultInjector | None = None
        self.plan = FaultPlan()
        self.set(plan)

    def attach(self, target: Any) -> None:
        self._targets.append(target)
        target.fault = self._injector

    def set(self, plan: FaultPlan) -> None:
        """Apply ``plan`` from the next request on (a fresh generator from its seed)."""
        check_plan(plan)
        self.plan = plan
        self._injector = FaultInjector(plan) if plan.enabled else None
        for target in self._targets:
            target.fault = self._injector  # one attribute store: atomic for the other threads

    def status(self) -> dict[str, Any]:
        counts = self._injector.counts if self._injector is not None else {"delayed": 0, "failed": 0}
        return {"enabled": self.plan.enabled, "plan": self.plan.to_json(), **counts}

    def handle_admin(self, method: str, body: bytes) -> tuple[int, bytes]:
        """``/lab/faults``: GET reads, POST sets (a JSON plan), DELETE clears. (status, JSON body)."""
        if method == "POST":
            try:
                plan = FaultPlan.from_json(json.loads(body or b"{}"), f"POST {ADMIN_PATH}")
            except ValueError as error:  # json.JSONDecodeError is one too
                return 400, json.dumps({"error": str(error)}).encode()
            self.set(plan)
        elif method == "DELETE":
            self.set(FaultPlan())
        elif method != "GET":
            return 405, json.dumps({"error": f"{method} {ADMIN_PATH}: use GET, POST or DELETE"}).encode()
        return 200, json.dumps(self.status()).encode()
