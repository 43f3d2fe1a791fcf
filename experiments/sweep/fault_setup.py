"""What a sweep trial with ``[[faults]]`` needs around it, and the reactive client factors.

For one trial: the injectors its schedule names (a supervisor over the server for a crash, a
proxy in front of it for network faults, the lab's Redis for an outage, the server's
/lab/faults for a slow model), the endpoints the load must use (the proxy's, for network
faults), and a :class:`FaultTrial` for ``measure_trial``. Everything is undone when the trial
ends; a crashed server stays up as restarted, and the pool keeps using it.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

from poochlab.experiments.faults.schedule import (
    MODEL_ROLLOUT, NETWORK, REDIS_OUTAGE, REPLICA_KILL, SERVER_CRASH, SLOW_MODEL, FaultSpec, kinds_in)
from poochlab.experiments.faults.trial import FAULT_WINDOW_S, FaultTrial

if TYPE_CHECKING:
    from poochlab.experiments.faults.rollout import ModelRollout
    from poochlab.experiments.faults.supervisor import ServerSupervisor
    from poochlab.experiments.load.settings import LoadSettings
    from poochlab.experiments.sweep.servers import ServerEndpoints
    from poochlab.experiments.sweep.trial_execution import RunContext

DEFAULT_TIMEOUT_S = 5.0  # ClientConfig.timeout_s
DEFAULT_DEADLINE_S = 0.1  # FallbackConfig.deadline_s


def reactive_client(context: RunContext, factors: dict[str, Any]) -> dict[str, Any]:
    """ClientConfig settings for the ``fallback``, ``deadline_ms`` and breaker factors (the
    registry maps the factors that set one field each, such as ``retries``)."""
    from poochlab.clients.config import FallbackConfig

    deadline_s = factors["deadline_ms"] / 1000 if factors.get("deadline_ms") else None
    settings: dict[str, Any] = {}
    if factors.get("fallback") == "on":
        base = context.servers.model_base_path(factors.get("model_variant", "small"))
        latest = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        settings["fallback"] = FallbackConfig(
            # A str: the record describes the client as JSON.
            baseline_path=str(latest / "assets.extra" / "historical_baseline.json"),
            **({"deadline_s": deadline_s} if deadline_s else {}),
            **({"breaker_failures": factors["breaker_failures"]} if factors.get("breaker_failures") else {}),
            **({"cooldown_s": factors["breaker_cooldown_ms"] / 1000}
               if factors.get("breaker_cooldown_ms") is not None else {}))
    elif deadline_s:
        settings["timeout_s"] = deadline_s
    return settings


def slo_ms(spec: Any, factors: dict[str, Any]) -> float:
    """What 'answered in time' means in a fault trial's availability: the sweep's p99 budget,
    else the client's deadline."""
    if spec.p99_budget_ms is not None:
        return float(spec.p99_budget_ms)
    if factors.get("deadline_ms"):
        return float(factors["deadline_ms"])
    return 1000 * (DEFAULT_DEADLINE_S if factors.get("fallback") == "on" else DEFAULT_TIMEOUT_S)


def fault_settings(settings: LoadSettings) -> LoadSettings:
    """A fault trial's load settings: windows short enough to time a recovery."""
    return dataclasses.replace(settings, window_s=min(settings.window_s, FAULT_WINDOW_S))


@contextmanager
def fault_trial(context: RunContext, factors: dict[str, Any],
                endpoints: ServerEndpoints) -> Iterator[tuple[ServerEndpoints, FaultTrial | None]]:
    """(endpoints the load must use, the trial's FaultTrial or None without faults)."""
    schedule = with_rollout_warmup(list(context.spec.faults), factors)
    if not schedule:
        yield endpoints, None
        return
    from poochlab.experiments.faults.injectors import NetworkFault, RedisOutage, ServerCrash, SlowModel

    kinds = kinds_in(schedule)
    injectors: dict[str, Any] = {}
    with ExitStack() as undo:
        if SERVER_CRASH in kinds:
            injectors[SERVER_CRASH] = ServerCrash(_supervise(context, endpoints, undo))
        if REDIS_OUTAGE in kinds:
            if context.redis is None:
                raise RuntimeError("a redis_outage trial without the lab's Redis")
            injectors[REDIS_OUTAGE] = RedisOutage(context.redis)
        if SLOW_MODEL in kinds:
            injectors[SLOW_MODEL] = SlowModel(endpoints.rest_url)
        if NETWORK in kinds:
            from poochlab.experiments.faults.proxy import FaultProxy

            grpc = factors.get("protocol") == "grpc"
            host, port = _host_port(endpoints.grpc_target if grpc else endpoints.rest_url)
            proxy = undo.enter_context(FaultProxy(host, port))
            injectors[NETWORK] = NetworkFault(proxy)
            address = f"{host}:{proxy.port}"
            endpoints = dataclasses.replace(
                endpoints, grpc_target=address if grpc else endpoints.grpc_target,
                rest_url=endpoints.rest_url if grpc else f"{urlsplit(endpoints.rest_url).scheme}://{address}")
            endpoints.notes["fault_proxy"] = f"load sent through the lab's fault proxy {address} -> {host}:{port}"
        if MODEL_ROLLOUT in kinds:
            injectors[MODEL_ROLLOUT] = _rollout(context, endpoints, undo)
        if REPLICA_KILL in kinds:
            from poochlab.experiments.faults.replica_kill import ReplicaKill
            from poochlab.processes.servers.replicas import ReplicaSet

            if not isinstance(context.servers.handle, ReplicaSet):
                raise RuntimeError("a replica_kill needs replicas >= 2 behind the balancer")
            kill = ReplicaKill(context.servers.handle, endpoints.model_names)
            undo.callback(kill.release)
            injectors[REPLICA_KILL] = kill
        faults = FaultTrial(schedule, injectors, slo_ms=slo_ms(context.spec, factors))
        undo.callback(faults.finish)  # runs first: clears what is planted while the proxy still exists
        yield endpoints, faults


def with_rollout_warmup(schedule: list[FaultSpec], factors: dict[str, Any]) -> list[FaultSpec]:
    """The schedule with the ``rollout_warmup`` factor (on, off) as each model_rollout's warmup."""
    if factors.get("rollout_warmup") is None:
        return schedule
    warmup = factors["rollout_warmup"] == "on"
    return [dataclasses.replace(f, params={**f.params, "warmup": warmup}) if f.kind == MODEL_ROLLOUT else f
            for f in schedule]


def _rollout(context: RunContext, endpoints: ServerEndpoints, undo: ExitStack) -> ModelRollout:
    from poochlab.experiments.faults.rollout import ModelRollout

    pool = context.servers
    if pool.served_copy is None:
        raise RuntimeError("a model_rollout needs the server to serve the lab's own copy of the base path "
                           "(server_kind \"lab\" or \"tfserving\")")
    from poochlab.processes.servers.replicas import ReplicaSet

    handle, current = pool.handle, pool.current
    assert handle is not None and current is not None  # the trial's server was started before its faults
    urls = [r.rest_url for r in handle.replicas] if isinstance(handle, ReplicaSet) else [handle.rest_url]
    base = pool.served_copy / pool.model_base_path(current.model_variant).name
    rollout = ModelRollout(base, urls, endpoints.model_names)
    # The server now serves a version the export does not have: the next trial starts afresh.
    undo.callback(pool.stop)
    undo.callback(rollout.discard)
    return rollout


def _supervise(context: RunContext, endpoints: ServerEndpoints, undo: ExitStack) -> ServerSupervisor:
    from poochlab.experiments.faults.supervisor import ServerSupervisor

    from poochlab.processes.servers.launcher import RunningServer

    pool = context.servers
    if not isinstance(pool.handle, RunningServer) or pool.handle.process is None:  # None: external
        raise RuntimeError("a server_crash needs one server the lab runs as a process (replicas = 1, "
                           "server_kind \"lab\" or \"tfserving\")")
    supervisor = ServerSupervisor(pool.handle, endpoints.model_names,
                                  on_restart=lambda server: setattr(pool, "handle", server)).start()
    undo.callback(supervisor.release)  # the restarted server keeps serving the next trials
    return supervisor


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    assert parts.hostname is not None and parts.port is not None, address
    return parts.hostname, parts.port
