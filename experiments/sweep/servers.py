"""The servers of a run: started through the launcher, restarted only when server-side factors change."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poochlab.experiments.sweep.manifest import Manifest
from poochlab.experiments.sweep.server_configs import MONITORING_PATH, ServerConfig, write_config_files
from poochlab.experiments.sweep.spec import SweepSpec
from poochlab.models.pupdate import MODEL_NAME

if TYPE_CHECKING:
    from poochlab.processes.servers.handle import ServerHandle

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
        self.spec_for_replicas: Any = None  # the ServerSpec replicas were started from (reactive scaling)
        self.handle: ServerHandle | None = None
        self.starts = 0
        # A sweep with a model_rollout serves a copy of the export it may add versions to
        # (experiments/faults/rollout.py): the folder holding it, removed when the server stops.
        self.served_copy: Path | None = None

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
        from poochlab.processes.servers.launcher import ServerSpec, launch

        self.starts += 1
        if self.spec.server_kind == "external":
            # Someone else's server: nothing to configure, start or stop; only readiness.
            external = {k: v for k, v in (self.spec.external or {}).items() if k != "behind_balancer"}
            external_server = launch(ServerSpec(kind="external", **external))
            self.handle, self.current = external_server, server
            external_server.wait_until_available(server.model_names(), timeout_s=READY_TIMEOUT_S)
            return
        files = write_config_files(self.run_dir / "configs" / server.config_id, server,
                                   self._served_base_path(server), self.spec.batching_sets)
        if self.spec.ab is not None:  # two variants under one name, labelled (sweep/ab_serving.py)
            self._write_ab_models(files.models_config)
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
            extra_flags=_fault_flags(self.spec) + ((f"--lab_max_queue={server.max_queue}",) if server.max_queue else ()),
        )
        handle: ServerHandle
        if server.replicas > 1 or server.scaling == "reactive":
            from poochlab.processes.servers.replicas import launch_replicas

            # Reactive: replicas come and go, so none is pinned (a new one would find no core free).
            handle = launch_replicas(spec, server.replicas, balancer="nginx", pin=server.scaling != "reactive")
            self.spec_for_replicas = spec
        else:
            handle = launch(spec)
        self.handle, self.current = handle, server
        for command, binary in handle.launches():
            # tfserving/docker kinds say which binary or image really ran (never the lab's as TF Serving).
            self.manifest.add_server_command(server.config_id, self.spec.server_kind, command, binary=binary)
        if handle.placement is not None:
            self.manifest.data.setdefault("replica_placement", {})[server.config_id] = handle.placement
            self.manifest.save()
        handle.wait_until_available(server.model_names(), timeout_s=READY_TIMEOUT_S)

    def _served_base_path(self, server: ServerConfig) -> Path:
        base = self.model_base_path(server.model_variant)
        if not any(f.kind == "model_rollout" for f in self.spec.faults):
            return base
        from poochlab.experiments.faults.rollout import served_copy

        self.served_copy = self.run_dir / "served-models" / f"{server.config_id}-start{self.starts}"
        shutil.rmtree(self.served_copy, ignore_errors=True)  # left by an interrupted run
        return served_copy(base, self.served_copy / base.name)

    def _write_ab_models(self, models_config: Path) -> None:
        from poochlab.experiments.sweep.ab_serving import ab_models_config_text, link_versions

        ab = self.spec.ab
        assert ab is not None
        base = link_versions(models_config.parent / "ab_versions" / MODEL_NAME,
                             self.model_base_path(ab.stable_variant), self.model_base_path(ab.canary_variant))
        models_config.write_text(ab_models_config_text(MODEL_NAME, base.absolute()))

    def _endpoints(self, server: ServerConfig) -> ServerEndpoints:
        handle = self.handle
        assert handle is not None
        metrics_url: str | None = handle.rest_url + MONITORING_PATH
        # A container's note names the server inside it, never the `docker run` client.
        notes: dict[str, str] = {"server_resources": handle.resource_note()}
        # An external server's spec says whether it stands behind a balancer; the lab cannot see it.
        if handle.behind_balancer or (handle.kind == "external" and (self.spec.external or {}).get("behind_balancer")):
            metrics_url, notes["server_metrics"] = None, BEHIND_BALANCER
        return ServerEndpoints(handle.rest_url, handle.grpc_target, handle.pid, metrics_url, server.model_names(),
                               notes)

    def _alive(self) -> bool:
        return self.handle is not None and self.handle.alive

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
        if self.served_copy is not None:
            shutil.rmtree(self.served_copy, ignore_errors=True)
            self.served_copy = None
