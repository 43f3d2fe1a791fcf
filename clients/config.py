"""How to build a predictor, as one frozen data object (an experiment's client factors).

Validated on construction, so a sweep spec with a typo fails when it is loaded, naming the
field, not halfway through a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from poochlab.models.pupdate import MODEL_NAME, SIGNATURE_NAME

PROTOCOLS = ("rest", "grpc")
# "lean" is the fastest HTTP library we measured (clients/lean_http_client.py: httptools on a
# bare socket); the others name one library each, so the library can be a factor of an experiment.
REST_LIBRARIES = ("requests", "lean", "geventhttpclient", "urllib3", "http.client", "httptools")
# gRPC: grpcio, or "lean", the lab's own HTTP/2 wire (clients/grpc_wire.py) at half grpcio's CPU.
GRPC_LIBRARIES = ("grpcio", "lean")
REQUEST_FORMATS = ("row", "columnar")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class CacheConfig:
    """Redis cache-aside in front of the model.

    ``op_timeout_s`` bounds every Redis command (a slow Redis counts as a cache error and the
    model answers). After a Redis connection error or timeout the cache is bypassed for
    ``reconnect_after_s`` before the next attempt, so a dead Redis costs one failed attempt per
    interval, not one per request. ``version_refresh_s``: how often the serving version is
    re-read from the server's status API. ``single_flight``: concurrent identical misses in
    one process share one model call.
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    ttl_s: float = 300.0
    op_timeout_s: float = 0.05
    version_refresh_s: float = 1.0
    single_flight: bool = True
    reconnect_after_s: float = 0.5
    key_prefix: str = "poochlab:prediction:"

    def __post_init__(self) -> None:
        _require(self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                 f"cache.redis_url must start with redis://, rediss:// or unix:// (got {self.redis_url!r})")
        _require(self.ttl_s > 0, f"cache.ttl_s must be positive (got {self.ttl_s})")
        _require(self.op_timeout_s > 0, f"cache.op_timeout_s must be positive (got {self.op_timeout_s})")
        _require(self.version_refresh_s >= 0, f"cache.version_refresh_s must not be negative (got {self.version_refresh_s})")
        _require(self.reconnect_after_s >= 0, f"cache.reconnect_after_s must not be negative (got {self.reconnect_after_s})")


@dataclass(frozen=True)
class FallbackConfig:
    """The supervisor: a deadline, sanity bounds, a circuit breaker and the historical baseline.

    ``baseline_path`` is the ``historical_baseline.json`` the export writes next to the model
    (``<version>/assets.extra/``). After ``breaker_failures`` consecutive failed model calls the
    breaker opens: requests are answered from the baseline for ``cooldown_s``, then one probe
    goes to the model.
    """

    baseline_path: Path | str
    deadline_s: float = 0.1
    max_likes: float = 1_000_000.0
    breaker_failures: int = 5
    cooldown_s: float = 5.0

    def __post_init__(self) -> None:
        _require(self.deadline_s > 0, f"fallback.deadline_s must be positive (got {self.deadline_s})")
        _require(self.max_likes > 0, f"fallback.max_likes must be positive (got {self.max_likes})")
        _require(self.breaker_failures >= 1, f"fallback.breaker_failures must be at least 1 (got {self.breaker_failures})")
        _require(self.cooldown_s >= 0, f"fallback.cooldown_s must not be negative (got {self.cooldown_s})")


@dataclass(frozen=True)
class ABConfig:
    """An online A/B test (clients/ab_split.py): ``canary_share`` of the requests go to the
    version labelled ``canary``, ``baseline_share`` to the historical-average model read from
    ``baseline_path``, the rest to the version labelled ``stable``. ``seed`` draws the arms."""

    canary_share: float
    baseline_share: float = 0.0
    baseline_path: Path | str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _require(0.0 <= self.canary_share <= 1.0, f"ab.canary_share must be within [0, 1] (got {self.canary_share})")
        _require(0.0 <= self.baseline_share <= 1.0 - self.canary_share,
                 f"ab.baseline_share must be within [0, 1 - canary_share] (got {self.baseline_share})")
        _require(self.baseline_share == 0 or self.baseline_path is not None,
                 "ab.baseline_path is needed when ab.baseline_share > 0")


@dataclass(frozen=True)
class ClientConfig:
    """Everything that decides how a prediction request is made.

    ``version`` or ``version_label`` pins the model version (TF Serving's addressing); with
    neither, the server's latest version answers. ``retries`` is the number of extra attempts
    after a connection error or an "unavailable" answer (HTTP 503, gRPC UNAVAILABLE); the
    default 0 keeps measurements honest. Timeouts are never retried.
    ``grpc_max_send_bytes`` / ``grpc_max_receive_bytes``: None keeps gRPC's defaults
    (unlimited send, 4 MiB receive).
    """

    protocol: str = "rest"
    library: str | None = None  # None: "lean" for REST, "grpcio" for gRPC
    rest_url: str = "http://127.0.0.1:8501"
    grpc_target: str = "127.0.0.1:8500"
    model_name: str = MODEL_NAME
    version: int | None = None
    version_label: str | None = None
    signature_name: str = SIGNATURE_NAME
    request_format: str = "row"
    timeout_s: float = 5.0
    retries: int = 0
    grpc_max_send_bytes: int | None = None
    grpc_max_receive_bytes: int | None = None
    # A server serving several models at once: requests rotate over model_name and these.
    rotate_models: tuple[str, ...] = ()
    cache: CacheConfig | None = None
    fallback: FallbackConfig | None = None
    ab: ABConfig | None = None  # an A/B test between version labels (clients/ab_split.py)

    def __post_init__(self) -> None:
        _require(self.protocol in PROTOCOLS, f"protocol must be one of {PROTOCOLS} (got {self.protocol!r})")
        allowed = REST_LIBRARIES if self.protocol == "rest" else GRPC_LIBRARIES
        _require(self.library is None or self.library in allowed,
                 f"library for protocol {self.protocol!r} must be one of {allowed} (got {self.library!r})")
        _require(self.request_format in REQUEST_FORMATS,
                 f"request_format must be one of {REQUEST_FORMATS} (got {self.request_format!r})")
        _require(self.rest_url.startswith(("http://", "https://")) and bool(urlsplit(self.rest_url).hostname),
                 f"rest_url must start with http:// or https:// and name a host (got {self.rest_url!r})")
        _require(bool(self.model_name), "model_name must not be empty")
        _require(all(isinstance(n, str) and n for n in self.rotate_models) and self.model_name not in self.rotate_models,
                 f"rotate_models must be other non-empty model names (got {self.rotate_models!r})")
        _require(self.version is None or self.version_label is None,
                 "give at most one of version and version_label")
        _require(self.version is None or (isinstance(self.version, int) and self.version > 0),
                 f"version must be a positive integer (got {self.version!r})")
        _require(self.timeout_s > 0, f"timeout_s must be positive (got {self.timeout_s})")
        _require(isinstance(self.retries, int) and self.retries >= 0,
                 f"retries must be a non-negative integer (got {self.retries!r})")
        _require(self.ab is None or (self.version is None and self.version_label is None and not self.rotate_models),
                 "an A/B test pins each arm's version label itself: give no version, version_label or rotate_models")
        for name in ("grpc_max_send_bytes", "grpc_max_receive_bytes"):
            value = getattr(self, name)
            _require(value is None or (isinstance(value, int) and value > 0),
                     f"{name} must be a positive integer or None (got {value!r})")

    @property
    def resolved_library(self) -> str:
        if self.library is not None:
            return self.library
        return "lean" if self.protocol == "rest" else "grpcio"
