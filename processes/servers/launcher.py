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
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

LAB = "lab"


class ServerStartError(RuntimeError):
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    process: subprocess.Popen | None  # None: a server someone else runs (kind "external")
    _log_handle: object = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def rest_url(self) -> str:
        return f"http://{_client_host(self.spec.host)}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{_client_host(self.spec.host)}:{self.grpc_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

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
        deadline = time.monotonic() + timeout_s
        waiting = list(model_names)
        while waiting:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(
                    f"server exited with code {self.process.returncode} before {', '.join(waiting)} "
                    f"became AVAILABLE; command: {' '.join(self.command)}\nlog tail ({self.log_path}):\n{self.log_tail()}")
            waiting = [m for m in waiting if not self.model_available(m)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{', '.join(waiting)} not AVAILABLE after {timeout_s:.0f} s at {self.rest_url}; "
                    f"command: {' '.join(self.command)}\nlog tail ({self.log_path}):\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        return self.process.returncode

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def launch(spec: ServerSpec) -> RunningServer:
    """Start the server of ``spec`` (ports 0 become free ports); does not wait for models.

    Kinds other than the lab's (tfserving, docker, external) live in ``poochlab.processes.servers``.
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
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "ab")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return RunningServer(spec, command, rest_port, grpc_port, log_path, process, handle)
