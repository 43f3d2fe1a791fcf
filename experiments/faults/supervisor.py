"""The lab's supervisor: restart a server process that died, on the same ports, and record it.

    supervisor = ServerSupervisor(running_server, ["pooch_predictor"])
    supervisor.start()          # watches the process from its own thread
    ... the process dies (a crash fault SIGKILLs it) ...
    restart = supervisor.wait_for_restart(1, timeout_s=120)   # died, restarted, AVAILABLE again
    supervisor.stop()           # stops the server; no restart after this

The restart runs the same command line on the same ports with the same log file (appended), so
clients keep their addresses; ``server`` is the current RunningServer (same class as the one
given, e.g. a tfserving IdentifiedServer). ``on_restart`` is told of each new one (a ServerPool
or a ReplicaSet can swap it in). A container kind is not supervised here: SIGKILL of the
`docker run` client would not stop the server inside it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from poochlab.processes.servers.launcher import RunningServer, launch_command


def _same_command(command: list[str]) -> Callable[[int, int], list[str]]:
    """The restarted server's command: the old one, ports included (the ports are kept)."""
    return lambda rest_port, grpc_port: command


@dataclass(frozen=True)
class Restart:
    """One death and recovery, in ``time.monotonic()`` seconds."""

    died_at: float  # when the supervisor saw the process gone
    exit_code: int | None
    restarted_at: float  # the new process started
    available_at: float | None  # its models AVAILABLE again (None: they never were)
    pid: int | None
    error: str | None = None


class ServerSupervisor:
    def __init__(self, server: RunningServer, model_names: Sequence[str], *, ready_timeout_s: float = 180.0,
                 on_restart: Callable[[RunningServer], None] | None = None) -> None:
        if server.process is None:
            raise ValueError("cannot supervise a server the lab does not run (kind 'external')")
        if hasattr(server, "container"):
            raise ValueError("cannot supervise a container by its `docker run` client: killing the client "
                             "does not stop the server inside; use `docker restart` on the container")
        self.server = server
        self.model_names = list(model_names)
        self.ready_timeout_s = ready_timeout_s
        self.on_restart = on_restart
        self.restarts: list[Restart] = []
        self._changed = threading.Condition()
        self._stopping = False
        self._released = False  # release(): stop watching, keep the server
        self._thread: threading.Thread | None = None

    def start(self) -> "ServerSupervisor":
        self._thread = threading.Thread(target=self._watch, name="server-supervisor", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while True:
            process = self.server.process
            assert process is not None
            code = process.wait()
            died_at = time.monotonic()
            with self._changed:
                if self._stopping:
                    return
            old = self.server
            if old.process is not None:
                old.process.stop()  # already gone: reaps it and closes its log
            restarted_at = time.monotonic()
            available_at, error = None, None
            try:
                spec = dataclasses.replace(old.spec, rest_port=old.rest_port, grpc_port=old.grpc_port,
                                           log_file=old.log_path)
                fresh = launch_command(spec, _same_command(list(old.command)))
                self.server = dataclasses.replace(old, process=fresh.process)
                if self.on_restart is not None:
                    self.on_restart(self.server)
                self.server.wait_until_available(self.model_names, timeout_s=self.ready_timeout_s)
                available_at = time.monotonic()
            except Exception as failure:  # recorded; a server that cannot come back ends the watch
                error = f"{type(failure).__name__}: {failure}"
            with self._changed:
                self.restarts.append(Restart(died_at, code, restarted_at, available_at, self.server.pid, error))
                self._changed.notify_all()
                stopping = self._stopping
            if stopping:  # stop() came while restarting: it may have stopped the old process only
                if not self._released:
                    self.server.stop()
                return
            if error is not None:
                return

    def wait_for_restart(self, count: int, timeout_s: float) -> Restart:
        """The ``count``-th restart (1-based) once it is over; TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.restarts) >= count, timeout_s):
                raise TimeoutError(f"the server did not come back within {timeout_s:.0f} s "
                                   f"(log {self.server.log_path}):\n{self.server.log_tail()}")
            return self.restarts[count - 1]

    def release(self) -> None:
        """Stop watching but leave the current server running (the sweep's next trials use it).
        The watching thread ends when that server next exits, without restarting it."""
        with self._changed:
            self._stopping = self._released = True

    def stop(self) -> None:
        """Stop the current server for good (no restart)."""
        with self._changed:
            self._stopping = True
        self.server.stop()
        if self._thread is not None:
            self._thread.join(30)
