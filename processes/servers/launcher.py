"""Start a model server from a resolved configuration, wait for its models, stop it.

The sweep runner and the tests use one interface for every server kind::

    spec = ServerSpec(model_config_file=Path("serving_configs/models.config"), rest_port=0, grpc_port=0)
    with launch(spec) as server:
        server.wait_until_available(["pooch_predictor"], timeout_s=120)
        requests.post(server.rest_url + "/v1/models/pooch_predictor:predict", ...)

``server_command(spec)`` (spec -> command line) is separate from starting the process, so
other kinds (real ``tensorflow_model_server``, docker, external) reuse the same flags.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from poochlab.processes.lifecycle import ManagedProcess, ProcessStartError, free_port, poll_until

LAB = "lab"


class ServerStartError(ProcessStartError):
    """The server exited or never made its models AVAILABLE; the message holds its log tail."""


@dataclass(frozen=True)
class ServerSpec:
    """Everything that decides how a server is started (resolved: no defaults left to guess)."""

    kind: str = LAB
    model_config_file: Path | None = None
    model_name: str | None = None  # with model_base_path, when there is no model config file
    model_base_path: Path | None = None
    batching_parameters_file: Path | None = None  # batching on when set
    enable_batching: bool = False  # batching with TF Serving's defaults when no file is given
    monitoring_config_file: Path | None = None
    rest_port: int = 0  # 0: pick a free port
    grpc_port: int = 0
    host: str = "127.0.0.1"
    rest_api_num_threads: int | None = None  # None: the server's default
    grpc_max_threads: int | None = None
    tensorflow_intra_op_parallelism: int | None = None
    tensorflow_inter_op_parallelism: int | None = None
    file_system_poll_wait_seconds: int | None = None
    extra_flags: tuple[str, ...] = ()
    log_file: Path | None = None  # None: a temporary file


def tf_serving_flags(spec: ServerSpec, rest_port: int, grpc_port: int) -> list[str]:
    """TF Serving's flags for ``spec`` (the same for the lab's server and the real one)."""
    flags = [f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    if spec.model_config_file is not None:
        flags.append(f"--model_config_file={spec.model_config_file}")
    elif spec.model_base_path is not None:
        flags += [f"--model_name={spec.model_name or 'default'}", f"--model_base_path={spec.model_base_path}"]
    else:
        raise ValueError("ServerSpec needs model_config_file or model_base_path")
    if spec.batching_parameters_file is not None or spec.enable_batching:
        flags.append("--enable_batching=true")
    if spec.batching_parameters_file is not None:
        flags.append(f"--batching_parameters_file={spec.batching_parameters_file}")
    if spec.monitoring_config_file is not None:
        flags.append(f"--monitoring_config_file={spec.monitoring_config_file}")
    for name in ("rest_api_num_threads", "grpc_max_threads", "tensorflow_intra_op_parallelism",
                 "tensorflow_inter_op_parallelism", "file_system_poll_wait_seconds"):
        value = getattr(spec, name)
        if value is not None:
            flags.append(f"--{name}={value}")
    return flags + list(spec.extra_flags)


def server_command(spec: ServerSpec, rest_port: int, grpc_port: int) -> list[str]:
    """The command line that starts ``spec``'s server on the given (resolved) ports."""
    if spec.kind != LAB:
        raise ValueError(f"server kind {spec.kind!r} is not supported by this launcher (only {LAB!r})")
    command = [sys.executable, "-m", "poochlab.serving", *tf_serving_flags(spec, rest_port, grpc_port)]
    if spec.host != "127.0.0.1":
        command.append(f"--lab_bind_address={spec.host}")
    return command


@dataclass
class RunningServer:
    """A started server process; stop it with :meth:`stop` or use it as a context manager."""

    spec: ServerSpec
    command: list[str]
    rest_port: int
    grpc_port: int
    log_path: Path
    process: ManagedProcess | None  # None: a server someone else runs (kind "external")

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        """Whether its process runs (a server someone else runs counts as alive)."""
        return self.process is None or self.process.alive

    @property
    def rest_url(self) -> str:
        return f"http://{_client_host(self.spec.host)}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{_client_host(self.spec.host)}:{self.grpc_port}"

    @property
    def endpoints(self) -> dict[str, str]:
        return {"rest": self.rest_url, "grpc": self.grpc_target}

    @property
    def behind_balancer(self) -> bool:
        return False

    @property
    def placement(self) -> dict[str, Any] | None:
        return None

    def launches(self) -> list[tuple[list[str], dict[str, object] | None]]:
        """Each server process's command line and the binary it ran (None: the lab's own)."""
        return [(list(self.command), getattr(self, "binary", None))]

    def resource_note(self) -> str:
        """What the lab's CPU and memory figures for this server come from."""
        if self.process is None:
            return "not measured: a server someone else runs"
        return f"pid {self.pid}: the server process"

    def log_tail(self, lines: int = 40) -> str:
        if self.process is not None:
            return self.process.log_tail(lines)
        return "(no log)"

    def model_available(self, model_name: str) -> bool:
        """Whether GET /v1/models/<m> reports a version AVAILABLE."""
        try:
            with urllib.request.urlopen(f"{self.rest_url}/v1/models/{model_name}", timeout=2) as answer:
                body = json.loads(answer.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(s.get("state") == "AVAILABLE" for s in body.get("model_version_status", []))

    def wait_until_available(self, model_names: Sequence[str], timeout_s: float = 120.0) -> None:
        """Block until every model is AVAILABLE; ServerStartError (with the log tail) otherwise."""
        waiting = list(model_names)

        def all_available() -> bool:
            waiting[:] = [m for m in waiting if not self.model_available(m)]
            return not waiting

        if self.process is None:
            if not poll_until(all_available, timeout_s, 0.2):
                raise ServerStartError(self._not_available(waiting, timeout_s, "(no log)"))
            return
        try:
            self.process.wait_ready(all_available, timeout_s, what=f"{', '.join(waiting)} AVAILABLE",
                                    stop_on_timeout=False, poll_s=0.2)
        except ProcessStartError as error:
            if error.returncode is None:
                raise ServerStartError(self._not_available(waiting, timeout_s, error.log_tail),
                                       log_tail=error.log_tail) from None
            raise ServerStartError(
                f"server exited with code {error.returncode} before {', '.join(waiting)} "
                f"became AVAILABLE; command: {' '.join(self.command)}\nlog tail ({self.log_path}):\n{error.log_tail}",
                returncode=error.returncode, log_tail=error.log_tail) from None

    def _not_available(self, waiting: list[str], timeout_s: float, tail: str) -> str:
        return (f"{', '.join(waiting)} not AVAILABLE after {timeout_s:.0f} s at {self.rest_url}; "
                f"command: {' '.join(self.command)}\nlog tail ({self.log_path}):\n{tail}")

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        return self.process.stop(timeout_s)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def launch(spec: ServerSpec) -> RunningServer:
    """Start the server of ``spec`` (ports 0 become free ports); does not wait for models.

    Kinds other than the lab's (tfserving, docker, external) live beside this module.
    """
    if spec.kind != LAB:
        from poochlab.processes.servers.registry import launch_kind

        return launch_kind(spec)
    return launch_command(spec, lambda rest_port, grpc_port: server_command(spec, rest_port, grpc_port))


def launch_command(spec: ServerSpec, command_for: Callable[[int, int], list[str]]) -> RunningServer:
    """Start ``command_for(rest_port, grpc_port)`` as ``spec``'s server process, logging to a file."""
    import tempfile

    rest_port = spec.rest_port or free_port()
    grpc_port = spec.grpc_port or free_port()
    while grpc_port == rest_port:
        grpc_port = free_port()
    command = command_for(rest_port, grpc_port)
    log_path = spec.log_file or Path(tempfile.mkstemp(prefix="lab-server-", suffix=".log")[1])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    server = RunningServer(spec, command, rest_port, grpc_port, log_path, None)
    process = ManagedProcess(command, name="server", env=env, log_path=log_path, grace_s=15.0,
                             endpoints=server.endpoints)
    server.process = process.start()
    return server
