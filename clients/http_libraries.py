"""HTTP/1.1 keep-alive connections to one server, one adapter per client library.

The library is an experimental factor (issue 5: `requests` costs several times what a lean
client does), so each adapter does the same thing the way its library does it: send one
request on a kept-alive connection and return status, body and the ``Server-Timing`` header.
Idle connections are pooled, so one predictor can be shared by all of a process's threads,
Locust users or per-request greenlets.

``lean`` is the ``httptools`` adapter: a bare socket and httptools' C response parser, the
least Python per call of all of them (``poochlab bench clients``: the lowest client CPU per call
and the p50 closest to wrk's). Under gevent's monkey patching (Locust) its socket is gevent's and
waits cooperatively; in plain threads it blocks. geventhttpclient stays available by name: it
is what Locust's FastHttpUser uses.

Library modules are imported only when an adapter is built, so importing poochlab.clients
stays cheap and Locust can monkey-patch before ``requests`` or ``urllib3`` are loaded.
"""

from __future__ import annotations

import importlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from poochlab.clients.prediction import KIND_BAD_RESPONSE, KIND_CONNECTION, KIND_TIMEOUT, PredictionError

LEAN_LIBRARY = "httptools"

# Bumped in a forked child (Locust --processes): a pool made before the fork must not use the
# parent's sockets. A counter read per call costs less than os.getpid(), a system call.
_fork_generation = 0


def _after_fork_in_child() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    server_timing: str | None


class _Connection:
    """One library's keep-alive connection; subclasses implement ``_send``, ``_reset``, ``close``.

    A failure to send or to read the answer on a *reused* connection usually means the server
    closed it while it was idle (uvicorn drops idle connections after 5 s; a server may also
    close right after answering), and the request is sent again once on a fresh connection.
    urllib3 checks a pooled connection before reuse but cannot see a close that is still in
    flight, and does not resend a POST; predict has no side effects, so resending is safe. This
    is not the retry policy: a failure on a fresh connection is reported as it is.
    """

    _reused = False
    # gevent sockets belong to the hub of the OS thread that made them: such connections are
    # pooled per OS thread (greenlets of one thread share them).
    thread_bound = False
    modules: tuple[str, ...] = ()  # imported when the pool is built, so no call pays for it

    def __init__(self, base_url: str, timeout_s: float) -> None:  # what HttpConnections builds each with
        raise NotImplementedError

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> HttpAnswer:
        reused = self._reused
        try:
            answer = self._send(method, path, body, headers, timeout_s)
        except PredictionError as error:
            if not (reused and error.kind == KIND_CONNECTION):
                raise
            self._reset()
            answer = self._send(method, path, body, headers, timeout_s)
        self._reused = self._kept_open()
        return answer

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget the connection: the next request opens a new one."""
        self._reused = False

    def _kept_open(self) -> bool:
        """Whether the connection stays open after an answer (not when the server said close)."""
        return True

    def close(self) -> None:
        raise NotImplementedError


class _RequestsConnection(_Connection):
    modules = ("requests",)

    def __init__(self, base_url: str, timeout_s: float) -> None:
        import requests

        self._requests = requests
        self._base_url = base_url
        self._session = requests.Session()

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        requests = self._requests
        try:
            response = self._session.request(method, self._base_url + path, data=body, headers=headers,
                                             timeout=timeout_s)
        except requests.Timeout as error:  # before ConnectionError: ConnectTimeout is both
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: {error}") from error
        except requests.RequestException as error:
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error}") from error
        return HttpAnswer(response.status_code, response.content, response.headers.get("Server-Timing"))

    def close(self) -> None:
        self._session.close()


class _Urllib3Connection(_Connection):
    modules = ("urllib3",)

    def __init__(self, base_url: str, timeout_s: float) -> None:
        import urllib3

        self._urllib3 = urllib3
        parts = urlsplit(base_url)
        assert parts.hostname is not None  # ClientConfig checks rest_url names a host
        pool_class = urllib3.HTTPSConnectionPool if parts.scheme == "https" else urllib3.HTTPConnectionPool
        self._pool = pool_class(parts.hostname, parts.port, maxsize=1, retries=False)

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        exceptions = self._urllib3.exceptions
        try:
            response = self._pool.urlopen(method, path, body=body, headers=headers, retries=False,
                                          timeout=self._urllib3.Timeout(total=timeout_s), preload_content=True)
        except exceptions.NewConnectionError as error:  # a subclass of ConnectTimeoutError, sadly
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error}") from error
        except exceptions.TimeoutError as error:
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: {error}") from error
        except (exceptions.HTTPError, OSError) as error:
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error}") from error
        return HttpAnswer(response.status, response.data, response.headers.get("Server-Timing"))

    def close(self) -> None:
        self._pool.close()


class _HttpClientConnection(_Connection):
    modules = ("http.client",)

    def __init__(self, base_url: str, timeout_s: float) -> None:
        import http.client

        self._http = http.client
        parts = urlsplit(base_url)
        assert parts.hostname is not None  # ClientConfig checks rest_url names a host
        self._connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._connection = self._connection_class(self._host, self._port)

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        connection = self._connection
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except TimeoutError as error:
            self._reset()
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: timed out after {timeout_s} s") from error
        except (OSError, self._http.HTTPException) as error:
            self._reset()
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error!r}") from error
        return HttpAnswer(response.status, data, response.getheader("Server-Timing"))

    def _reset(self) -> None:
        super()._reset()
        self._connection.close()
        self._connection = self._connection_class(self._host, self._port)

    def close(self) -> None:
        self._connection.close()


class _GeventHttpClientConnection(_Connection):
    thread_bound = True
    modules = ("gevent", "geventhttpclient", "geventhttpclient.response")

    def __init__(self, base_url: str, timeout_s: float) -> None:
        import gevent
        from geventhttpclient import HTTPClient
        from geventhttpclient.response import HTTPParseError

        self._gevent = gevent
        self._parse_error = HTTPParseError
        self._timeout_s = timeout_s
        parts = urlsplit(base_url)
        host = parts.hostname
        assert host is not None  # ClientConfig checks rest_url names a host
        self._make_client = lambda: HTTPClient(host, parts.port, concurrency=1,
                                               ssl=parts.scheme == "https", connection_timeout=timeout_s,
                                               network_timeout=timeout_s)
        self._client = self._make_client()

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        # The client's own per-operation timeouts are the configured timeout; a shorter one for
        # this call (the supervisor's deadline) becomes one total deadline for the whole call.
        deadline = self._gevent.Timeout(timeout_s) if timeout_s < self._timeout_s else None
        if deadline is not None:
            deadline.start()
        try:
            response = self._client.request(method, path, body=body or b"", headers=headers)
            data = response.read()
        except self._gevent.Timeout as error:
            if error is not deadline:
                raise
            self._reset()
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: timed out after {timeout_s} s") from None
        except TimeoutError as error:
            self._reset()
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: timed out after {timeout_s} s") from error
        except self._parse_error as error:
            self._reset()
            kind = KIND_CONNECTION if "closed" in str(error).lower() or not str(error) else KIND_BAD_RESPONSE
            raise PredictionError(kind, f"{method} {path}: {error!r}") from error
        except OSError as error:
            self._reset()
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error!r}") from error
        finally:
            if deadline is not None:
                deadline.close()
        server_timing = response.get("server-timing")
        if isinstance(server_timing, list):
            server_timing = ", ".join(server_timing)
        return HttpAnswer(response.status_code, bytes(data), server_timing)

    def _reset(self) -> None:
        super()._reset()
        self._client.close()
        self._client = self._make_client()

    def close(self) -> None:
        self._client.close()


class _HttptoolsConnection(_Connection):
    """A bare socket and httptools' C response parser: the least Python between call and wire.

    With gevent's monkey patching (Locust) the socket is gevent's and the wait is cooperative;
    in plain threads it blocks. ``timeout_s`` bounds the wait for the answer: the send and the
    first wait get all of it, each further chunk of the answer only what remains.
    Per call it only joins the request's bytes and feeds the answer to a parser kept with the
    connection: after a wake-up from a blocking wait every line of Python runs on cold caches,
    so the call path is kept short.
    """

    thread_bound = True  # a monkey-patched socket belongs to its OS thread's hub
    modules = ("httptools",)

    def __init__(self, base_url: str, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"the httptools client speaks plain http, not {parts.scheme!r} ({base_url})")
        import httptools

        self._new_parser, self._parse_error = httptools.HttpResponseParser, httptools.HttpParserError
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._host = parts.netloc
        self._socket: socket.socket | None = None
        self._cooperative = False  # a gevent socket: gevent enforces the timeout
        self._armed = -1.0  # the timeout the socket is set to
        self._answer = _ParsedAnswer()  # its parser is the connection's (a new one per connection)
        # (method, path, header items) -> the request head up to its Content-Length value.
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], bytes] = {}

    def _head(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        key = (method, path, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}",
                     *(f"{name}: {value}" for name, value in headers.items())]
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            if len(self._heads) < 64:  # a client addresses a handful of paths; never grow unbounded
                self._heads[key] = head
        return head

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        body = body or b""
        data = b"%s%d\r\n\r\n%s" % (self._head(method, path, headers), len(body), body)
        deadline = time.monotonic() + timeout_s
        answer = self._answer
        answer.start()
        try:
            if self._socket is None:
                self._connect(timeout_s)
                answer.parser = self._new_parser(answer)
            connection, parser = self._socket, answer.parser
            assert connection is not None  # _connect opened it above
            self._arm(timeout_s)
            connection.sendall(data)
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    raise ConnectionResetError("the server closed the connection")
                parser.feed_data(chunk)
                if answer.complete:
                    break
                self._arm(max(deadline - time.monotonic(), 1e-6))
        except (TimeoutError, BlockingIOError):  # BlockingIOError: the kernel's SO_RCVTIMEO expired
            self._reset()
            raise PredictionError(KIND_TIMEOUT, f"{method} {path}: timed out after {timeout_s} s") from None
        except self._parse_error as error:
            self._reset()
            raise PredictionError(KIND_BAD_RESPONSE, f"{method} {path}: not an HTTP answer ({error})") from None
        except OSError as error:
            self._reset()
            raise PredictionError(KIND_CONNECTION, f"{method} {path}: {error!r}") from error
        status = parser.get_status_code()
        if not answer.keep_alive:
            self._reset()
        return HttpAnswer(status, answer.body[0] if len(answer.body) == 1 else b"".join(answer.body),
                          answer.server_timing)

    def _connect(self, timeout_s: float) -> None:
        sock = socket.create_connection(self._address, timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A plain socket blocks, and the kernel enforces the timeout (SO_RCVTIMEO/SO_SNDTIMEO):
        # Python's own timeout would poll() before every send and recv, a system call each.
        # gevent's socket (Locust) keeps gevent's cooperative timeout.
        self._cooperative = type(sock).__module__.startswith("gevent")
        if not self._cooperative:
            sock.settimeout(None)
        self._armed = -1.0
        self._socket = sock

    def _arm(self, timeout_s: float) -> None:
        """Make the next send/recv give up after ``timeout_s`` (a system call only on change)."""
        if timeout_s == self._armed:
            return
        assert self._socket is not None
        if self._cooperative:
            self._socket.settimeout(timeout_s)
        else:
            # struct timeval; zero would mean "wait forever", so at least one microsecond.
            value = struct.pack("ll", *divmod(max(int(timeout_s * 1e6), 1), 1_000_000))
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._armed = timeout_s

    def _reset(self) -> None:
        super()._reset()
        self.close()

    def _kept_open(self) -> bool:
        return self._socket is not None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class _ParsedAnswer:
    """httptools' callbacks for the answers on one connection, one at a time."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.start()

    def start(self) -> None:
        self.body: list[bytes] = []
        self.server_timing: str | None = None
        self.complete = False
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"server-timing":
            text = value.decode("latin-1")
            self.server_timing = text if self.server_timing is None else f"{self.server_timing}, {text}"

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        # Read it now: once the message is complete the parser resets and always says False.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


_ADAPTERS: dict[str, type[_Connection]] = {
    "requests": _RequestsConnection,
    "urllib3": _Urllib3Connection,
    "http.client": _HttpClientConnection,
    "geventhttpclient": _GeventHttpClientConnection,
    "httptools": _HttptoolsConnection,
}


def library_name(library: str) -> str:
    """The library a configured name stands for ("lean" -> the measured fastest)."""
    return LEAN_LIBRARY if library == "lean" else library


class HttpConnections:
    """Keep-alive connections to one server with one library, shared by threads and greenlets.

    A call takes an idle connection (the most recently used, so a sequential caller always
    reuses the same one) or opens a new one, and gives it back when done: a process holds as
    many connections as it ever had calls in flight at once, whether its callers are threads,
    Locust users or a greenlet per request (an open-loop generator). geventhttpclient's
    connections cannot leave the OS thread that opened them, so its pool is per OS thread.
    """

    def __init__(self, base_url: str, library: str, timeout_s: float) -> None:
        name = library_name(library)
        if name not in _ADAPTERS:
            raise ValueError(f"unknown HTTP library {library!r}; expected one of {sorted(_ADAPTERS)} or 'lean'")
        self.library = name
        self._factory = _ADAPTERS[name]
        for module in self._factory.modules:
            importlib.import_module(module)
        # Not threading.get_ident: gevent patches that to a per-greenlet id; the native id is the OS thread's.
        self._pool_key: Callable[[], int] = threading.get_native_id if self._factory.thread_bound else int
        self._base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s  # the usual timeout; a call may ask for a shorter one
        self._idle: dict[int, list[_Connection]] = {}
        self._all: list[_Connection] = []
        self._lock = threading.Lock()
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
            idle = self._idle.setdefault(key, [])
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
                self._idle.setdefault(key, []).append(connection)

    def _forget_parents_connections(self) -> None:
        """After a fork (Locust --processes): the parent's sockets stay the parent's."""
        self._lock = threading.Lock()
        self._idle, self._all, self._generation = {}, [], _fork_generation

    def close(self) -> None:
        with self._lock:
            connections, self._all, self._idle = self._all, [], {}
        for connection in connections:
            connection.close()
