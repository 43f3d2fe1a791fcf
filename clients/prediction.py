"""What every predictor returns or raises: the prediction, the path that produced it, its timing.

These few types are the whole contract between the clients and their users (the CLI, Locust
users, benchmarks): a :class:`Predictor` takes pupdates and answers a :class:`Prediction`, or
raises :class:`PredictionError` with a ``kind`` an experiment can count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from poochlab.models.pupdate import Pupdate

# Which part of the stack produced an answer; a request whose rows came from different
# paths reports PATH_MIXED and lists each row's path in Prediction.paths.
PATH_MODEL = "model"
PATH_CACHE = "cache"
PATH_FALLBACK = "fallback"
PATH_MIXED = "mixed"

# Failure kinds besides "http_<status>" and "grpc_<CODE>".
KIND_TIMEOUT = "timeout"
KIND_CONNECTION = "connection"
KIND_BAD_RESPONSE = "bad_response"


class PredictionError(Exception):
    """A prediction failed; ``kind`` is "timeout", "connection", "http_<status>",
    "grpc_<CODE>" (e.g. "grpc_UNAVAILABLE") or "bad_response"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def error_kind(exception: BaseException) -> str:
    """How a failed request is counted: its ``kind`` (a PredictionError's), else
    ``client_<exception type>`` (a bug or a failure outside the clients)."""
    kind = getattr(exception, "kind", None)
    return kind if isinstance(kind, str) and kind else f"client_{type(exception).__name__}"


@dataclass(frozen=True)
class CallTiming:
    """Where one call's time went, in microseconds, and when it was on the wire.

    ``encode_us`` builds the request (and cache keys), ``wait_us`` is spent waiting on the
    network and servers (Redis included: ``cache_wait_us`` is that part of it), ``decode_us``
    parses answers. The server's queue and compute times come from its ``Server-Timing``
    header or gRPC trailing metadata and are None when it sends none (real TF Serving).

    ``sent_at`` and ``answered_at`` (``time.monotonic`` seconds) bound the call's time on the
    wire: from its first request handed to the network (after encoding) to its last answer
    read (before decoding); None when the call never waited on a server (a baseline answer).
    A load generator's latency runs between them, as wrk's and k6's do: the client's own
    encoding and decoding stay in ``encode_us`` and ``decode_us``, reported beside it.
    """

    encode_us: float
    wait_us: float
    decode_us: float
    server_queue_us: float | None = None
    server_compute_us: float | None = None
    cache_wait_us: float = 0.0
    sent_at: float | None = None
    answered_at: float | None = None

    @property
    def client_us(self) -> float:
        """The client's own CPU work: encoding plus decoding."""
        return self.encode_us + self.decode_us

    def plus(self, other: "CallTiming") -> "CallTiming":
        """Both calls' time, as when a request needed a cache lookup and a model call; on the
        wire from the first one's send to the last one's answer."""
        return CallTiming(
            encode_us=self.encode_us + other.encode_us,
            wait_us=self.wait_us + other.wait_us,
            decode_us=self.decode_us + other.decode_us,
            server_queue_us=_sum_optional(self.server_queue_us, other.server_queue_us),
            server_compute_us=_sum_optional(self.server_compute_us, other.server_compute_us),
            cache_wait_us=self.cache_wait_us + other.cache_wait_us,
            sent_at=_first(min, self.sent_at, other.sent_at),
            answered_at=_first(max, self.answered_at, other.answered_at),
        )


def _first(pick: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    """``pick`` (min or max) of the stamps that exist."""
    if a is None:
        return b
    return a if b is None else pick(a, b)


def _sum_optional(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


ZERO_TIMING = CallTiming(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Prediction:
    """Predicted likes, one per pupdate, and how they were obtained.

    ``paths`` holds each row's path; ``path`` is the common one or "mixed".
    ``model_version`` is the version that answered the model rows when known (gRPC echoes it;
    over REST it is the version the cache resolved, else None). ``fallback_reason`` says why
    the supervisor answered rows from the historical baseline ("timeout", "breaker_open",
    "out_of_bounds", ...). ``arm`` names the A/B test's arm that answered (clients/ab_split.py).
    """

    likes: list[float]
    paths: tuple[str, ...]
    timing: CallTiming
    model_version: int | None = None
    fallback_reason: str | None = None
    arm: str | None = None

    @property
    def path(self) -> str:
        return common_path(self.paths)


def common_path(paths: Sequence[str]) -> str:
    """The one path all rows share, or "mixed"."""
    if not paths:
        return PATH_MODEL
    first = paths[0]
    return first if all(p == first for p in paths) else PATH_MIXED


PupdateLike = Pupdate | Mapping[str, Any]


class Predictor(Protocol):
    """Anything that turns pupdates into predicted likes: a transport, the cache, the supervisor.

    Implementations are safe to share between threads and gevent greenlets (one predictor per
    process is the intended use), validate every pupdate before touching the network
    (``ValueError`` naming the field), and raise :class:`PredictionError` on failure.
    ``timeout_s`` overrides the configured timeout downwards for this call (the supervisor
    passes its remaining deadline).
    """

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class RowPredictor(Predictor, Protocol):
    """A predictor the cache and the supervisor can wrap: it also takes rows already validated
    (a transport, or the cache around one), so the wrapper validates once."""

    def predict_rows(self, rows: list[dict[str, Any]], *, timeout_s: float | None = None) -> Prediction: ...
