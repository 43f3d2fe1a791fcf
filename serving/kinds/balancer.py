"""Debian's nginx as a local load balancer: started unprivileged from a generated config.

The launcher renders the configuration into a private temporary prefix (pid file, temp folders
and error log inside it), runs nginx in the foreground on two unprivileged 127.0.0.1 ports and
stops it with SIGTERM. The same renderer writes docker/nginx/nginx.conf.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from poochlab.serving.kinds.nginx_config import Backend, BalancerConfig, render_nginx_config
from poochlab.serving.launcher import free_port

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


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class RunningBalancer:
    """An nginx process balancing REST and gRPC over `backends`."""

    process: subprocess.Popen
    workdir: Path
    rest_port: int
    grpc_port: int
    backends: tuple[Backend, ...]
    config_path: Path
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, lines: int = 20) -> str:
        log = self.workdir / "error.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (fast shutdown) and remove its temporary prefix."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


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
    process = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(config_path), "-e", str(workdir / "error.log"),
         "-g", "daemon off;"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    balancer = RunningBalancer(process, workdir, rest_port, grpc_port, tuple(backends), config_path, tmp)
    deadline = time.monotonic() + timeout
    while not (_accepts(rest_port) and _accepts(grpc_port)):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = balancer.log_tail()
            balancer.stop()
            state = f"exited with {process.returncode}" if process.poll() is not None else f"not listening after {timeout:.0f} s"
            raise RuntimeError(f"nginx ({binary}) {state}; error log:\n{tail}")
        time.sleep(0.05)
    return balancer
