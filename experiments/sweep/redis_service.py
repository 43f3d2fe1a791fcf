"""A real redis-server owned by the lab: started on a free loopback port, never persisted.

The sweep runner starts one for runs with a cache factor; the tests start one per session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from poochlab.serving.launcher import free_port


@dataclass
class RedisServer:
    """A redis-server that can be stopped and started again on the same port."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = None

    @classmethod
    def on_free_port(cls, workdir: Path) -> "RedisServer":
        return cls(port=free_port(), workdir=workdir)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make run` or `make test` installs it "
                               "(Debian: apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # No snapshots, no append-only file: a cache experiment starts from what the lab puts in.
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()
