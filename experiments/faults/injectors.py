"""The injectors a FaultRunner calls: each plants one kind of fault and clears it again.

``inject``/``clear`` return details for the trial's record; times are clock seconds (since
the measurement started).
"""

from __future__ import annotations

import json
import os
import signal

import urllib.error
import urllib.request
from typing import Any

from poochlab.experiments.faults.proxy import FaultProxy
from poochlab.experiments.faults.runner import Clock
from poochlab.experiments.faults.schedule import FaultSpec
from poochlab.experiments.faults.supervisor import ServerSupervisor
from poochlab.serving.fault_injection import ADMIN_PATH, FaultPlan

DEFAULT_RECOVERY_TIMEOUT_S = 180.0


def server_fault_flags(plan: FaultPlan | None = None, admin: bool = True) -> tuple[str, ...]:
    """``ServerSpec.extra_flags`` for a lab server that can take faults: ``plan`` from the
    start, and (``admin``) /lab/faults so a SlowModel can set one at run time."""
    flags = []
    if plan is not None and plan.enabled:
        flags += [f"--lab_fault_delay_ms={plan.delay_ms}", f"--lab_fault_delay_fraction={plan.delay_fraction}",
                  f"--lab_fault_error_fraction={plan.error_fraction}", f"--lab_fault_seed={plan.seed}"]
        if plan.error_code:
            flags.append(f"--lab_fault_error_code={plan.error_code}")
    if admin:
        flags.append("--lab_fault_admin=true")
    return tuple(flags)


def restart_timeline(supervisor: ServerSupervisor, restarts: int, spec: FaultSpec, clock: Clock,
                     what: str) -> dict[str, Any]:
    """Wait for ``supervisor``'s ``restarts``-th restart and say when the killed process died, was
    restarted and served again (``cleared_at_s``: AVAILABLE), in the trial's clock."""
    timeout = float(spec.params.get("recovery_timeout_s", DEFAULT_RECOVERY_TIMEOUT_S))
    restart = supervisor.wait_for_restart(restarts, timeout)
    if restart.available_at is None:
        raise RuntimeError(f"{what} was restarted but never AVAILABLE again: {restart.error}")
    return {"exit_code": restart.exit_code, "new_pid": restart.pid,
            "died_at_s": clock.from_monotonic(restart.died_at),
            "restarted_at_s": clock.from_monotonic(restart.restarted_at),
            "cleared_at_s": clock.from_monotonic(restart.available_at)}


class ServerCrash:
    """SIGKILL the supervised server; cleared when the supervisor has it AVAILABLE again.

    Recorded: the pid killed, when the supervisor saw it die, when the new process started, when
    its models were AVAILABLE (``cleared_at_s``) and ``recovery_s`` (kill to AVAILABLE)."""

    def __init__(self, supervisor: ServerSupervisor) -> None:
        self.supervisor = supervisor
        self._expected = 0  # restarts seen before this kill

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        pid = self.supervisor.server.pid
        if pid is None:
            raise RuntimeError("the supervised server has no process to kill")
        self._expected = len(self.supervisor.restarts) + 1
        os.kill(pid, signal.SIGKILL)
        return {"injected_at_s": clock.now(), "killed_pid": pid}

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        return restart_timeline(self.supervisor, self._expected, spec, clock, "the server")


class RedisOutage:
    """Kill the lab's redis-server for the fault's duration, then start it on the same port
    (empty: a restarted cache is a cold one). A Redis the lab does not own cannot be stopped."""

    def __init__(self, redis: Any) -> None:
        if not hasattr(redis, "process"):
            raise ValueError("a Redis outage needs the lab's own redis-server (RedisServer), not a Redis "
                             f"someone else runs ({getattr(redis, 'url', redis)})")
        self.redis = redis

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        pid = self.redis.pid
        self.redis.stop()
        return {"injected_at_s": clock.now(), "redis_pid": pid, "redis_url": self.redis.url}

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        self.redis.start()
        return {"cleared_at_s": clock.now(), "new_redis_pid": self.redis.pid}


class SlowModel:
    """Set a fault plan on a running lab server through /lab/faults (it must run with
    ``--lab_fault_admin``, see :func:`server_fault_flags`), and clear it after the duration."""

    def __init__(self, rest_url: str, timeout_s: float = 10.0) -> None:
        self.url = rest_url.rstrip("/") + ADMIN_PATH
        self.timeout_s = timeout_s

    def _send(self, method: str, body: bytes | None = None) -> dict[str, Any]:
        request = urllib.request.Request(self.url, data=body, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise RuntimeError(f"{self.url} answered 404: start the lab's server with --lab_fault_admin=true "
                                   "(ServerSpec(extra_flags=server_fault_flags())); TF Serving has no such path") from None
            raise RuntimeError(f"{method} {self.url}: HTTP {error.code}: {error.read()[:300]!r}") from None

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        plan = FaultPlan.from_json(dict(spec.params), "slow_model")
        answer = self._send("POST", json.dumps(plan.to_json()).encode())
        return {"injected_at_s": clock.now(), "plan": answer["plan"]}

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        before = self._send("GET")  # how many requests the fault touched
        self._send("DELETE")
        return {"cleared_at_s": clock.now(), "delayed": before["delayed"], "failed": before["failed"]}


class NetworkFault:
    """Delay, freeze or drop the connections through a :class:`FaultProxy` the lab runs."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy

    def inject(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        mode = spec.params["mode"]
        detail: dict[str, Any] = {"mode": mode, "proxy": self.proxy.address}
        if mode == "delay":
            self.proxy.set_delay(float(spec.params["delay_ms"]))
            detail["delay_ms_each_way"] = spec.params["delay_ms"]
        elif mode == "freeze":
            self.proxy.set_frozen(True)
        else:
            detail["connections_dropped"] = self.proxy.drop(refuse_new=True)
        detail["injected_at_s"] = clock.now()
        return detail

    def clear(self, spec: FaultSpec, clock: Clock) -> dict[str, Any]:
        refused = self.proxy.refused
        self.proxy.clear()
        detail: dict[str, Any] = {"cleared_at_s": clock.now()}
        if spec.params["mode"] == "drop":
            detail["connections_refused_total"] = refused
        return detail


