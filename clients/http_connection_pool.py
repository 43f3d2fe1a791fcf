"""A pool of kept-alive HTTP connections to one server, shared by threads and greenlets.

Idle connections are pooled, so one predictor can be shared by all of a process's threads,
Locust users or per-request greenlets.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Callable

from poochlab.clients.http_connection import HttpAnswer, KeepAliveConnection
from poochlab.clients.http_libraries import ADAPTERS, library_name
from poochlab.clients.os_lock import os_lock
from poochlab.clients.prediction import PredictionError

# Bumped in a forked child (Locust --processes): a pool made before the fork must not use the
# parent's sockets. A counter read per call costs less than os.getpid(), a system call.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class HttpConnectionPool:
    """Keep-alive connections to one server with one library, shared by threads and greenlets.

    A call takes an idle connection (the most recently used, so a sequential caller always
    reuses the same one) or opens a new one, and gives it back when done: a process holds as
    many connections as it ever had calls in flight at once, whether its callers are threads,
    Locust users or a greenlet per request (an open-loop generator). geventhttpclient's
    connections cannot leave the OS thread that opened them, so its pool is per OS thread.
    """

    def __init__(self, base_url: str, library: str, timeout_s: float) -> None:
        name = library_name(library)
        if name not in ADAPTERS:
            raise ValueError(f"unknown HTTP library {library!r}; expected one of {sorted(ADAPTERS)} or 'lean'")
        self.library = name
        self._factory = ADAPTERS[name]
        for module in self._factory.modules:
            importlib.import_module(module)
        # Not threading.get_ident: gevent patches that to a per-greenlet id; the native id is the OS thread's.
        self._pool_key: Callable[[], int] = threading.get_native_id if self._factory.thread_bound else int
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s  # the usual timeout; a call may ask for a shorter one
        self._idle: dict[int, list[KeepAliveConnection]] = {}
        self._all: list[KeepAliveConnection] = []
        self._lock = os_lock()  # held only around the idle lists
        self._generation = _fork_generation

    @property
    def opened(self) -> int:
        """Connections opened so far (one per concurrent caller at the peak)."""
        return len(self._all)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> HttpAnswer:
        if self._generation != _fork_generation:
            self._forget_parents_connections()
        key = self._pool_key()
        with self._lock:
            idle = self._idle.get(key)
            connection = idle.pop() if idle else None
        if connection is None:
            connection = self._factory(self._base_url, self._timeout_s)
            with self._lock:
                self._all.append(connection)
        try:
            return connection.request(method, path, body, headers, timeout_s)
        except PredictionError:
            raise  # the adapter already reset what it could not reuse
        except BaseException:
            # Interrupted mid-call (Locust killing a user's greenlet, gevent.Timeout, Ctrl-C):
            # the answer may still arrive on this socket, and the next caller would read it as
            # its own. Never reuse it.
            connection._reset()  # noqa: SLF001 (the pool owns its connections)
            raise
        finally:
            with self._lock:
                idle = self._idle.get(key)
                if idle is None:
                    self._idle[key] = [connection]
                else:
                    idle.append(connection)

    def _forget_parents_connections(self) -> None:
        """After a fork (Locust --processes): the parent's sockets stay the parent's."""
        self._lock = os_lock()
        self._idle, self._all, self._generation = {}, [], _fork_generation

    def close(self) -> None:
        with self._lock:
            connections, self._all, self._idle = self._all, [], {}
        for connection in connections:
            connection.close()
