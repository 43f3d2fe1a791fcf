"""A trial's fault schedule: ``[[faults]]`` tables of a TOML spec, checked when loaded.

    [[faults]]
    kind = "slow_model"      # server_crash | redis_outage | slow_model | network | model_rollout | replica_kill
    at_s = 10                # seconds after the measurement starts
    duration_s = 5           # how long it lasts (server_crash, model_rollout, replica_kill: none,
                             # they last until the server or replica is AVAILABLE again)
    delay_ms = 200           # the kind's own settings (see KIND_PARAMS)

Errors name the file and the key (``spec.toml: faults[1].duration_s: ...``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeGuard

SERVER_CRASH = "server_crash"
REDIS_OUTAGE = "redis_outage"
SLOW_MODEL = "slow_model"
NETWORK = "network"
MODEL_ROLLOUT = "model_rollout"
REPLICA_KILL = "replica_kill"
NETWORK_MODES = ("delay", "freeze", "drop")

# Each kind's own keys and their types; a kind's settings are checked again by its injector.
KIND_PARAMS: dict[str, dict[str, tuple[type, ...]]] = {
    SERVER_CRASH: {"recovery_timeout_s": (int, float)},
    REDIS_OUTAGE: {},
    SLOW_MODEL: {"delay_ms": (int, float), "delay_fraction": (int, float), "error_code": (str,),
                 "error_fraction": (int, float), "seed": (int,)},
    NETWORK: {"mode": (str,), "delay_ms": (int, float)},
    MODEL_ROLLOUT: {"warmup": (bool,), "available_timeout_s": (int, float)},
    REPLICA_KILL: {"replica": (int,), "restart": (bool,), "recovery_timeout_s": (int, float)},
}
# Kinds that last until something recovers on its own, not for a planned duration.
UNTIL_RECOVERED = frozenset({SERVER_CRASH, MODEL_ROLLOUT, REPLICA_KILL})


class ScheduleError(ValueError):
    """A fault schedule that cannot be run; the message names the file and key."""


@dataclass(frozen=True)
class FaultSpec:
    """One planned fault: ``kind`` at ``at_s`` seconds after the measurement starts, for
    ``duration_s`` seconds (0 for a crash), with the kind's ``params``."""

    kind: str
    at_s: float
    duration_s: float = 0.0
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def clear_at_s(self) -> float:
        return self.at_s + self.duration_s


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_faults(tables: object, source: str) -> list[FaultSpec]:
    """The ``faults`` array of tables of a parsed spec (``source`` names it in errors)."""
    if not isinstance(tables, list):
        raise ScheduleError(f"{source}: faults must be an array of tables ([[faults]])")
    specs = []
    for index, table in enumerate(tables):
        where = f"{source}: faults[{index}]"
        if not isinstance(table, dict):
            raise ScheduleError(f"{where} must be a table")
        kind = table.get("kind")
        if kind not in KIND_PARAMS:
            raise ScheduleError(f"{where}.kind: {kind!r} is not a fault kind ({', '.join(KIND_PARAMS)})")
        at_s = table.get("at_s")
        if not _number(at_s) or at_s < 0:
            raise ScheduleError(f"{where}.at_s: seconds after the measurement starts (a number >= 0), got {at_s!r}")
        duration = table.get("duration_s", 0.0)
        if kind in UNTIL_RECOVERED:
            if duration not in (0, 0.0):
                raise ScheduleError(f"{where}.duration_s: a {kind} lasts until the server is AVAILABLE again; "
                                    "leave duration_s out (a timeout setting bounds the wait)")
        elif not _number(duration) or duration <= 0:
            raise ScheduleError(f"{where}.duration_s: a {kind} needs a duration in seconds (> 0), got {duration!r}")
        allowed = KIND_PARAMS[kind]
        params = {k: v for k, v in table.items() if k not in ("kind", "at_s", "duration_s")}
        for key, value in params.items():
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                raise ScheduleError(f"{where}.{key}: not a setting of {kind} (its settings: {known})")
            if (isinstance(value, bool) and bool not in allowed[key]) or not isinstance(value, allowed[key]):
                raise ScheduleError(f"{where}.{key}: expected {' or '.join(t.__name__ for t in allowed[key])}, "
                                    f"got {value!r}")
        _check_kind(kind, params, where)
        specs.append(FaultSpec(kind, float(at_s), float(duration), params))
    return specs


def _check_kind(kind: str, params: dict[str, Any], where: str) -> None:
    if kind == NETWORK:
        mode = params.get("mode")
        if mode not in NETWORK_MODES:
            raise ScheduleError(f"{where}.mode: one of {', '.join(NETWORK_MODES)}, got {mode!r}")
        if mode == "delay" and not (params.get("delay_ms", 0) > 0):
            raise ScheduleError(f"{where}.delay_ms: mode \"delay\" needs delay_ms > 0")
        if mode != "delay" and "delay_ms" in params:
            raise ScheduleError(f"{where}.delay_ms: only mode \"delay\" takes delay_ms")
    elif kind == SLOW_MODEL:
        from poochlab.serving.fault_injection import FaultPlan, check_plan

        plan = FaultPlan(**params)
        try:
            check_plan(plan, f"{where}.")
        except ValueError as error:
            raise ScheduleError(str(error)) from None
        if not plan.enabled:
            raise ScheduleError(f"{where}: a slow_model needs delay_ms > 0 or an error_code")
    elif kind in (SERVER_CRASH, REPLICA_KILL) and params.get("recovery_timeout_s", 1) <= 0:
        raise ScheduleError(f"{where}.recovery_timeout_s: must be positive")
    elif kind == MODEL_ROLLOUT and params.get("available_timeout_s", 1) <= 0:
        raise ScheduleError(f"{where}.available_timeout_s: must be positive")
    if kind == REPLICA_KILL and params.get("replica", 0) < 0:
        raise ScheduleError(f"{where}.replica: a replica index (0 for the first), got {params['replica']}")


def load_schedule(path: Path) -> list[FaultSpec]:
    """The ``[[faults]]`` of a TOML file ([] when it has none)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise ScheduleError(f"{path}: cannot read the fault schedule: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ScheduleError(f"{path}: not valid TOML: {error}") from None
    return parse_faults(data.get("faults", []), str(path))


def kinds_in(schedule: Sequence[FaultSpec]) -> set[str]:
    return {spec.kind for spec in schedule}
