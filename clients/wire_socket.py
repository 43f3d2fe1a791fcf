"""How the lean clients (REST's httptools connection, gRPC's HTTP/2 wire) hold their socket.

Under gevent's monkey patching (Locust), a call made on a thread that runs gevent's hub must
wait there cooperatively: the connection keeps the real socket, non-blocking, and waits with
gevent's ``wait_read``/``wait_write`` (gevent's own socket read once for nothing before every
wait and kept a timeout object per call). Every other thread (the gRPC load path's sending
threads, a program without gevent) blocks in the kernel with the GIL released: a patched socket
there would start a hub of its own in that thread and run an event loop around every wait.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Callable

# gevent's (wait_read, wait_write): each takes a file descriptor and a timeout in seconds.
HubWaits = tuple[Callable[..., Any], Callable[..., Any]]


def open_connection(address: tuple[str, int], timeout_s: float) -> tuple[socket.socket, HubWaits | None]:
    """A connected TCP socket (Nagle off) and, when calls must wait in this thread's gevent hub,
    gevent's waits (the socket is then non-blocking); else None and a blocking socket whose
    timeout is ``timeout_s``. Connection errors are the socket module's."""
    monkey = sys.modules.get("gevent.monkey")
    patched = monkey is not None and monkey.is_module_patched("socket")
    if patched and _thread_runs_a_hub():
        from gevent.socket import wait_read, wait_write

        # gevent's socket connects (cooperatively); calls then go to the real socket.
        connected = socket.create_connection(address, timeout=timeout_s)
        sock = monkey.get_original("socket", "socket")(fileno=connected.detach())  # type: ignore[union-attr]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock, (wait_read, wait_write)
    # The socket module's own create_connection would resolve through gevent's patched
    # getaddrinfo, which starts a hub in this thread: resolve and connect with the originals.
    if patched:
        getaddrinfo, real_socket = monkey.get_original("socket", ["getaddrinfo", "socket"])  # type: ignore[union-attr]
    else:
        getaddrinfo, real_socket = socket.getaddrinfo, socket.socket
    failure: OSError | None = None
    for family, kind, protocol, _, target in getaddrinfo(*address, 0, socket.SOCK_STREAM):
        sock = real_socket(family, kind, protocol)
        try:
            sock.settimeout(timeout_s)
            sock.connect(target)
        except OSError as error:
            sock.close()
            failure = error
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, None
    raise failure or OSError(f"no address found for {address[0]}")


def _thread_runs_a_hub() -> bool:
    try:
        from gevent._hub_local import get_hub_if_exists  # gevent's own threadpool asks the same
    except ImportError:  # a gevent without it: wait in the hub, as every gevent program may
        return True
    return get_hub_if_exists() is not None
