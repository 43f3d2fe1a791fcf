"""One kept-alive HTTP/1.1 connection, whatever the library: the answer it returns and the
resend-once rule for a connection the server closed while it was idle."""

from __future__ import annotations

from dataclasses import dataclass

from poochlab.clients.prediction import KIND_CONNECTION, PredictionError


@dataclass(frozen=True)
class HttpAnswer:
    """An answer; ``sent_at`` and ``received_at`` (``time.monotonic``), when the library can tell,
    are the moments the request went to the socket and the answer's last byte was parsed."""

    status: int
    body: bytes
    server_timing: str | None
    sent_at: float | None = None
    received_at: float | None = None


class KeepAliveConnection:
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

    def __init__(self, base_url: str, timeout_s: float) -> None:
        """Ready to connect to ``base_url``; ``timeout_s`` is the usual timeout of a call."""

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
            # The first attempt was on the wire too: its send time is not this answer's to tell.
            answer = HttpAnswer(answer.status, answer.body, answer.server_timing)
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
