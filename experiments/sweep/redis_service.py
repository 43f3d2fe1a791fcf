"""The Redis a sweep's cache trials use: one the lab starts, or one that already runs.

``RedisServer``: a real redis-server owned by the lab, started on a free loopback port, never
persisted; the sweep runner starts one for runs with a cache factor, the tests one per session.
``ExistingRedis``: a Redis someone else runs (compose's ``redis`` service, say), named by the
spec's ``sweep.redis_url`` or the ``POOCHLAB_REDIS_URL`` environment variable; the lab never
starts or stops it, and empties only the database its URL names before each cache trial.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from poochlab.serving.launcher import free_port

REDIS_URL_ENV = "POOCHLAB_REDIS_URL"


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
        return self.process.pid if self.process is not None and self.running else None

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


@dataclass
class ExistingRedis:
    """A Redis the lab does not own: same interface as RedisServer, but start() only checks it."""

    url: str
    source: str  # where the URL came from, for error messages

    pid = None  # not the lab's process: its CPU is not measured

    @property
    def running(self) -> bool:
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` for the Redis to answer PING; a clear error otherwise."""
        deadline = time.monotonic() + timeout_s
        while not self.running:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Redis answers at {self.url} (from {self.source}) within "
                                   f"{timeout_s:.0f} s: start it, or unset it to let the lab start its own")
            time.sleep(0.2)

    def stop(self) -> None:
        pass  # someone else's

    def flush(self) -> None:
        """Empty the database the URL names (never the others: the Redis may be shared)."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()


def sweep_redis(spec_url: str | None, workdir: Path,
                environ: Mapping[str, str] | None = None) -> "RedisServer | ExistingRedis":
    """The spec's ``sweep.redis_url``, else $POOCHLAB_REDIS_URL, else a redis-server of the lab's own."""
    environ = os.environ if environ is None else environ
    if spec_url:
        return ExistingRedis(spec_url, "the spec's sweep.redis_url")
    if environ.get(REDIS_URL_ENV):
        return ExistingRedis(environ[REDIS_URL_ENV], f"${REDIS_URL_ENV}")
    return RedisServer.on_free_port(workdir)
