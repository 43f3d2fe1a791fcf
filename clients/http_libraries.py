"""HTTP/1.1 keep-alive connections to one server, one adapter per client library.

The library is an experimental factor (``requests`` costs several times what a lean client
does), so each adapter does the same thing the way its library does it: send one request on a
kept-alive connection and return status, body and the ``Server-Timing`` header.

``lean`` names the ``httptools`` adapter (``lean_http_client.py``), the measured fastest.
geventhttpclient stays available by name: it is what Locust's FastHttpUser uses.

Library modules are imported only when an adapter is built, so importing poochlab.clients
stays cheap and Locust can monkey-patch before ``requests`` or ``urllib3`` are loaded.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from poochlab.clients.http_connection import HttpAnswer, KeepAliveConnection
from poochlab.clients.lean_http_client import HttptoolsConnection
from poochlab.clients.prediction import KIND_BAD_RESPONSE, KIND_CONNECTION, KIND_TIMEOUT, PredictionError

LEAN_LIBRARY = "httptools"


class _RequestsConnection(KeepAliveConnection):
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


class _Urllib3Connection(KeepAliveConnection):
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


class _HttpClientConnection(KeepAliveConnection):
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


class _GeventHttpClientConnection(KeepAliveConnection):
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


ADAPTERS: dict[str, type[KeepAliveConnection]] = {
    "requests": _RequestsConnection,
    "urllib3": _Urllib3Connection,
    "http.client": _HttpClientConnection,
    "geventhttpclient": _GeventHttpClientConnection,
    "httptools": HttptoolsConnection,
}


def library_name(library: str) -> str:
    """The library a configured name stands for ("lean" -> the measured fastest)."""
    return LEAN_LIBRARY if library == "lean" else library
