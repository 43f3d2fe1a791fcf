"""Debian's nginx as a local load balancer: started unprivileged from a generated config.

The launcher renders the configuration into a private temporary prefix (pid file, temp folders
and error log inside it), runs nginx in the foreground on two unprivileged 127.0.0.1 ports and
stops it with SIGTERM. The same renderer writes docker/nginx/nginx.conf.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from poochlab.processes.lifecycle import ManagedProcess, ProcessStartError, accepts_connections, free_port
from poochlab.processes.servers.nginx_config import Backend, BalancerConfig, render_nginx_config

_DEBIAN_NGINX = "/usr/sbin/nginx"  # root's PATH has /usr/sbin, a user's often does not


def find_nginx() -> str:
    """The nginx binary, or FileNotFoundError saying how to install it."""
    found = shutil.which("nginx") or (_DEBIAN_NGINX if Path(_DEBIAN_NGINX).exists() else None)
    if not found:
        raise FileNotFoundError("nginx is not installed (Debian: apt-get install nginx-light)")
    return found


def nginx_version(binary: str) -> tuple[int, int, int]:
    """The version `nginx -v` reports (it prints to stderr)."""
    result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    if not match:
        raise RuntimeError(f"{binary} -v did not report a version: {result.stderr.strip()!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


@dataclass
class RunningBalancer:
    """An nginx process balancing REST and gRPC over `backends`."""

    process: ManagedProcess
    workdir: Path
    rest_port: int
    grpc_port: int
    backends: tuple[Backend, ...]
    config_path: Path
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    config: BalancerConfig | None = None  # what config_path was rendered from (for reload)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def alive(self) -> bool:
        return self.process.alive

    def log_tail(self, lines: int = 20) -> str:
        return self.process.log_tail(lines)

    def reload(self, backends: Sequence[Backend], timeout: float = 10.0) -> bool:
        """Balance over ``backends`` from now on: rewrite the config and SIGHUP nginx, which starts
        workers with it and lets the old ones finish their requests (none is dropped). Returns
        once a worker with the new config runs (a child of the master that was not there before)
        and the old workers have exited (False: some still ran after ``timeout``)."""
        if self.config is None:
            raise RuntimeError("this balancer was not started from a BalancerConfig; cannot reload it")
        master = self.process.pid
        if master is None:
            raise RuntimeError("nginx is not running; cannot reload it")
        before = _children(master)
        self.config = replace(self.config, backends=tuple(backends))
        self.config_path.write_text(render_nginx_config(self.config))
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while not (_children(master) - before):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not reload with {len(backends)} backends; error log:\n{self.log_tail()}")
            time.sleep(0.02)
        self.backends = tuple(backends)
        # The old workers finish what they were answering, then exit: only then may a backend
        # they used stop without failing a request.
        while _children(master) & before and time.monotonic() < deadline:
            time.sleep(0.02)
        return not (_children(master) & before)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (fast shutdown) and remove its temporary prefix."""
        self.process.stop(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def start_balancer(
    backends: Sequence[Backend],
    *,
    rest_port: int | None = None,
    grpc_port: int | None = None,
    worker_processes: int = 1,
    timeout: float = 10.0,
) -> RunningBalancer:
    """Start nginx on 127.0.0.1 in front of `backends`; return once it accepts connections.

    worker_processes: nginx workers (each one event loop on one core); 1 leaves the cores to
    the servers being measured.
    """
    binary = find_nginx()
    tmp = tempfile.TemporaryDirectory(prefix="poochlab-nginx-")
    workdir = Path(tmp.name)
    rest_port = rest_port or free_port()
    grpc_port = grpc_port or free_port()
    config = BalancerConfig(
        backends=tuple(backends),
        rest_listen=f"127.0.0.1:{rest_port}",
        grpc_listen=f"127.0.0.1:{grpc_port}",
        worker_processes=str(worker_processes),
        runtime_dir=str(workdir),
        error_log=str(workdir / "error.log"),
        nginx_version=nginx_version(binary),
    )
    config_path = workdir / "nginx.conf"
    config_path.write_text(render_nginx_config(config))
    # World-readable prefix: when started as root, nginx's workers run as an unprivileged user.
    workdir.chmod(0o755)
    # nginx writes its own error log there; its stderr (before it opens the log) goes there too.
    process = ManagedProcess(
        [binary, "-p", str(workdir), "-c", str(config_path), "-e", str(workdir / "error.log"),
         "-g", "daemon off;"],
        name=f"nginx ({binary})", log_path=workdir / "error.log",
        endpoints={"rest": f"http://127.0.0.1:{rest_port}", "grpc": f"127.0.0.1:{grpc_port}"},
    ).start()
    balancer = RunningBalancer(process, workdir, rest_port, grpc_port, tuple(backends), config_path, tmp, config)
    try:
        process.wait_ready(lambda: accepts_connections(rest_port) and accepts_connections(grpc_port), timeout,
                           what=f"listening on ports {rest_port} and {grpc_port}", stop_on_timeout=False)
    except ProcessStartError as error:
        balancer.stop()
        state = f"exited with {error.returncode}" if error.returncode is not None \
            else f"not listening after {timeout:.0f} s"
        raise RuntimeError(f"nginx ({binary}) {state}; error log:\n{error.log_tail}") from None
    return balancer
