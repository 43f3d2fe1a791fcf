"""N replicas of one server configuration on this machine, behind nginx or client-side round robin.

    with launch_replicas(spec, 2, balancer="nginx") as replicas:
        replicas.wait_until_available(["pooch_predictor"])
        ... replicas.rest_url, replicas.grpc_target ...   # one address, like a single server
        manifest["placement"] = replicas.placement

balancer="nginx": Debian's nginx on 127.0.0.1 round-robins REST (HTTP/1.1 keep-alive) and gRPC
(HTTP/2) over the replicas (processes/servers/balancer.py). balancer="client": no proxy; gRPC uses
grpcio's own round_robin policy over all replica addresses (`grpc_target` plus
`grpc_channel_options`), and REST clients rotate over `rest_urls`.

Each replica is the same ServerSpec on its own ports. With pin=True, replica i runs on its own
share of the cores (taskset), so replicas do not compete for a core until there are more
replicas than cores; the placement is recorded either way.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from poochlab.processes.servers.balancer import RunningBalancer, start_balancer
from poochlab.processes.servers.nginx_config import Backend
from poochlab.processes.servers.launcher import LAB, RunningServer, ServerSpec, launch_command, server_command

BALANCERS = ("nginx", "client")


def replica_cores(n: int, cores: Sequence[int], pin: bool) -> list[list[int]]:
    """Cores for each of `n` replicas: disjoint equal shares when there are enough cores,
    else round robin (replicas share a core); every replica gets all cores when not pinned."""
    cores = sorted(cores)
    if not pin:
        return [list(cores) for _ in range(n)]
    if n <= len(cores):
        share = len(cores) // n
        return [cores[i * share:(i + 1) * share] for i in range(n)]
    return [[cores[i % len(cores)]] for i in range(n)]


@dataclass
class ReplicaSet:
    """Running replicas with one address for clients (the balancer's, or all of them)."""

    replicas: list[RunningServer]
    balancer: RunningBalancer | None
    placement: dict[str, Any]
    _stopped: bool = field(default=False, repr=False)

    kind: str = field(default="replicas", init=False)

    @property
    def rest_urls(self) -> list[str]:
        return [r.rest_url for r in self.replicas]

    @property
    def rest_url(self) -> str:
        """The balancer's URL; with client-side balancing, the first replica's (use rest_urls)."""
        return self.balancer.rest_url if self.balancer else self.replicas[0].rest_url

    @property
    def grpc_target(self) -> str:
        """With client-side balancing, a grpcio target listing every replica."""
        if self.balancer:
            return self.balancer.grpc_target
        return "ipv4:" + ",".join(r.grpc_target for r in self.replicas)

    @property
    def grpc_channel_options(self) -> list[tuple[str, Any]]:
        """Channel options that make grpcio spread calls over the replicas (client-side mode)."""
        return [] if self.balancer else [("grpc.lb_policy_name", "round_robin")]

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.replicas if r.pid is not None]

    @property
    def pid(self) -> int | None:
        """The first replica's (resources are recorded for it alone: see resource_note)."""
        return self.pids[0] if self.pids else None

    @property
    def endpoints(self) -> dict[str, str]:
        return {"rest": self.rest_url, "grpc": self.grpc_target}

    @property
    def alive(self) -> bool:
        """Every replica (and the balancer, if any) still runs."""
        return all(r.alive for r in self.replicas) and (self.balancer is None or self.balancer.alive)

    @property
    def behind_balancer(self) -> bool:
        return True

    def launches(self) -> list[tuple[list[str], dict[str, object] | None]]:
        return [launch for replica in self.replicas for launch in replica.launches()]

    def resource_note(self) -> str:
        return f"pid {self.pid}: the first of {len(self.replicas)} replicas only"

    def wait_until_available(self, model_names: Sequence[str], timeout_s: float = 120.0) -> None:
        """Every replica's models AVAILABLE (the launcher's check, with its log tail on failure)."""
        for replica in self.replicas:
            replica.wait_until_available(model_names, timeout_s)

    def log_tail(self, lines: int = 20) -> str:
        parts = [f"--- replica {i} ({r.log_path}):\n{r.log_tail(lines)}" for i, r in enumerate(self.replicas)]
        if self.balancer:
            parts.append(f"--- nginx ({self.balancer.workdir}):\n{self.balancer.log_tail(lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.balancer:
            self.balancer.stop()
        for replica in self.replicas:
            replica.stop()

    def __enter__(self) -> "ReplicaSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pinned(command_for: Callable[[int, int], list[str]], cores: list[int]) -> Callable[[int, int], list[str]]:
    taskset = shutil.which("taskset")
    if taskset is None:
        raise FileNotFoundError("taskset is missing (Debian: util-linux); it pins replicas to cores")
    cpu_list = ",".join(map(str, cores))
    # taskset execs the server, so the pid stays the server's and every thread inherits the cores.
    return lambda rest_port, grpc_port: [taskset, "--cpu-list", cpu_list, *command_for(rest_port, grpc_port)]


def _command_for(spec: ServerSpec, allow_lab_standin: bool) -> tuple[Callable[[int, int], list[str]], dict | None]:
    if spec.kind == LAB:
        return (lambda rest_port, grpc_port: server_command(spec, rest_port, grpc_port)), None
    if spec.kind == "tfserving":
        from poochlab.processes.servers.identify import require_tfserving
        from poochlab.processes.servers.tfserving import tfserving_binary, tfserving_command_for

        identity = require_tfserving(tfserving_binary(), allow_lab_standin=allow_lab_standin)
        return tfserving_command_for(spec, identity), identity.manifest()
    raise ValueError(
        f"replicas on one machine run server kind 'lab' or 'tfserving', not {spec.kind!r} "
        "(docker: `docker compose up --scale tfserving=N`; external: balance them where they run)"
    )


def launch_replicas(
    spec: ServerSpec,
    n: int,
    *,
    balancer: str = "nginx",
    pin: bool = False,
    nginx_workers: int = 1,
    allow_lab_standin: bool = False,
) -> ReplicaSet:
    """Start `n` servers of `spec` (each on free ports) and, with balancer="nginx", nginx in
    front of them on spec.rest_port/grpc_port (0: free ports). Does not wait for models."""
    if n < 1:
        raise ValueError(f"replicas must be at least 1, got {n}")
    if balancer not in BALANCERS:
        raise ValueError(f"unknown balancer {balancer!r}; choose one of {', '.join(BALANCERS)}")
    command_for, binary = _command_for(spec, allow_lab_standin)
    cores = replica_cores(n, sorted(os.sched_getaffinity(0)), pin)
    replicas: list[RunningServer] = []
    started: ReplicaSet | None = None
    try:
        for index, replica_cores_ in enumerate(cores):
            log_file = spec.log_file.with_name(f"{spec.log_file.stem}-replica{index}{spec.log_file.suffix}") \
                if spec.log_file else None
            replica_spec = dataclasses.replace(spec, rest_port=0, grpc_port=0, log_file=log_file)
            # The command depends on the spec only through the ports it is given.
            replica_command = _pinned(command_for, replica_cores_) if pin else command_for
            replicas.append(launch_command(replica_spec, replica_command))
        front = None
        if balancer == "nginx":
            front = start_balancer(
                [Backend("127.0.0.1", r.rest_port, r.grpc_port) for r in replicas],
                rest_port=spec.rest_port or None, grpc_port=spec.grpc_port or None,
                worker_processes=nginx_workers,
            )
        placement = {
            "replicas": n, "balancer": balancer, "pinned": pin, "replica_cores": cores,
            "nginx_workers": nginx_workers if front else 0, "available_cores": sorted(os.sched_getaffinity(0)),
            "binary": binary,
        }
        started = ReplicaSet(replicas, front, placement)
        return started
    finally:
        if started is None:
            for replica in replicas:
                replica.stop()

