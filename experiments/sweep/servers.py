"""The servers of a run: started through the launcher, restarted only when server-side factors change."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poochlab.experiments.sweep.manifest import Manifest
from poochlab.experiments.sweep.server_configs import MONITORING_PATH, ServerConfig, write_config_files
from poochlab.experiments.sweep.spec import SweepSpec
from poochlab.models.pupdate import MODEL_NAME

if TYPE_CHECKING:
    from poochlab.serving.kinds.replicas import ReplicaSet
    from poochlab.serving.launcher import RunningServer

READY_TIMEOUT_S = 180.0


BEHIND_BALANCER = ("unavailable behind a balancer: the scrapes before and after a trial may reach "
                   "different replicas, so Prometheus deltas would mix them; per-request server timing "
                   "comes only from servers that send Server-Timing (the lab's), which passes the balancer")


@dataclass
class ServerEndpoints:
    """Where a trial's load goes, and what to watch while it runs."""

    rest_url: str
    grpc_target: str
    pid: int | None  # the server's own process, for CPU, memory and placement; None: not visible
    metrics_url: str | None  # None: no meaningful Prometheus deltas (see notes["server_metrics"])
    model_names: list[str]
    # What the server's resource figures come from, and why metrics are missing, for the record.
    notes: dict[str, str] = field(default_factory=dict)


def _fault_flags(spec: SweepSpec) -> tuple[str, ...]:
    """A sweep with a slow_model fault needs the lab server's /lab/faults to plant it."""
    from poochlab.experiments.faults.injectors import server_fault_flags

    return server_fault_flags() if any(f.kind == "slow_model" for f in spec.faults) else ()


class ServerPool:
    """Holds at most one running server configuration at a time."""

    def __init__(self, spec: SweepSpec, run_dir: Path, model_root: Path, manifest: Manifest) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.model_root = model_root
        self.manifest = manifest
        self.current: ServerConfig | None = None
        self.handle: Any = None  # RunningServer or ReplicaSet
        self.starts = 0

    def model_base_path(self, variant: str) -> Path:
        base = self.model_root / variant / MODEL_NAME
        if not base.is_dir() or not any(p.name.isdigit() for p in base.iterdir()):
            raise FileNotFoundError(f"no exported {variant!r} model under {base}: "
                                    f"run `poochlab train --variant {variant}` first")
        return base

    def ensure(self, server: ServerConfig) -> ServerEndpoints:
        """The endpoints of ``server``, starting it (and stopping another) when needed."""
        if self.current != server or not self._alive():
            self.stop()
            self._start(server)
        return self._endpoints(server)

    def _start(self, server: ServerConfig) -> None:
        from poochlab.serving.launcher import ServerSpec, launch

        self.starts += 1
        # TODO(processes): one ServerHandle protocol (processes/) in place of this union.
        handle: RunningServer | ReplicaSet
        if self.spec.server_kind == "external":
            # Someone else's server: nothing to configure, start or stop; only readiness.
            external = {k: v for k, v in (self.spec.external or {}).items() if k != "behind_balancer"}
            handle = launch(ServerSpec(kind="external", **external))
            self.handle, self.current = handle, server
            handle.wait_until_available(server.model_names(), timeout_s=READY_TIMEOUT_S)
            return
        files = write_config_files(self.run_dir / "configs" / server.config_id, server,
                                   self.model_base_path(server.model_variant), self.spec.batching_sets)
        threads = server.server_threads or None
        spec = ServerSpec(
            kind=self.spec.server_kind,
            model_config_file=files.models_config,
            batching_parameters_file=files.batching_parameters,
            enable_batching=files.batching_parameters is not None,
            monitoring_config_file=files.monitoring_config,
            tensorflow_intra_op_parallelism=threads,
            tensorflow_inter_op_parallelism=threads,
            log_file=self.run_dir / "logs" / f"{server.config_id}-start{self.starts}.log",
            extra_flags=_fault_flags(self.spec),
        )
        if server.replicas > 1:
            from poochlab.serving.kinds.replicas import launch_replicas

            handle = launch_replicas(spec, server.replicas, balancer="nginx", pin=True)
            servers = list(handle.replicas)
            placement = handle.placement
        else:
            handle = launch(spec)
            servers = [handle]
            placement = None
        self.handle, self.current = handle, server
        for running in servers:
            # tfserving/docker kinds say which binary or image really ran (never the lab's as TF Serving).
            self.manifest.add_server_command(server.config_id, self.spec.server_kind, list(running.command),
                                             binary=getattr(running, "binary", None))
        if placement is not None:
            self.manifest.data.setdefault("replica_placement", {})[server.config_id] = placement
            self.manifest.save()
        handle.wait_until_available(server.model_names(), timeout_s=READY_TIMEOUT_S)

    def _endpoints(self, server: ServerConfig) -> ServerEndpoints:
        handle = self.handle
        metrics_url: str | None = handle.rest_url + MONITORING_PATH
        notes: dict[str, str] = {}
        if hasattr(handle, "replicas"):  # several servers behind nginx
            pid = handle.pids[0] if handle.pids else None
            notes["server_resources"] = f"pid {pid}: the first of {len(handle.replicas)} replicas only"
            metrics_url, notes["server_metrics"] = None, BEHIND_BALANCER
        elif self.spec.server_kind == "external":
            pid = None
            notes["server_resources"] = "not measured: a server someone else runs"
            if (self.spec.external or {}).get("behind_balancer"):
                metrics_url, notes["server_metrics"] = None, BEHIND_BALANCER
        elif hasattr(handle, "resource_source"):  # a container: the server, never the docker client
            pid = handle.pid
            notes["server_resources"] = handle.resource_source()
        else:
            pid = handle.pid
            notes["server_resources"] = f"pid {pid}: the server process"
        return ServerEndpoints(handle.rest_url, handle.grpc_target, pid, metrics_url, server.model_names(), notes)

    def _alive(self) -> bool:
        if self.handle is None:
            return False
        processes = [r.process for r in getattr(self.handle, "replicas", [self.handle])]
        return all(p is None or p.poll() is None for p in processes)

    def log_tail_if_dead(self) -> str | None:
        """The server's last log lines when it died during a trial (None while it is fine)."""
        if self.handle is None or self._alive():
            return None
        return self.handle.log_tail()

    def stop(self) -> None:
        if self.handle is not None:
            try:
                self.handle.stop()
            finally:
                self.handle, self.current = None, None
