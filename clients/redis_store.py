"""Redis access for the cache that can never fail a prediction.

Every command has a short timeout and no retries (redis-py retries 10 times with backoff by
default, which would turn a dead Redis into seconds of latency). Any error, timeout or
unreadable value is counted by reason and reported to the caller as "no cache this time".
After a connection error or timeout Redis is left alone for ``reconnect_after_s``; the next
attempt reconnects by itself (redis-py drops a broken connection and opens a new one).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

# Values carry a format tag, so anything Redis holds under our key that we did not write
# (or wrote in another format) is recognised as garbage instead of being served.
_VALUE_TAG = b"likes1:"


def encode_value(likes: float) -> bytes:
    return _VALUE_TAG + repr(float(likes)).encode("ascii")


def decode_value(data: bytes) -> float:
    """The likes stored in ``data``; ``ValueError`` when it is not one of our values."""
    if not isinstance(data, bytes) or not data.startswith(_VALUE_TAG):
        raise ValueError(f"not a cached prediction: {data[:40]!r}")
    likes = float(data[len(_VALUE_TAG):])
    if math.isnan(likes):
        raise ValueError("cached prediction is NaN")
    return likes


class RedisStore:
    def __init__(self, redis_url: str, op_timeout_s: float, reconnect_after_s: float) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_errors = (redis.RedisError, OSError)
        self._timeout_errors = (redis.TimeoutError, TimeoutError)
        self._client = redis.Redis.from_url(redis_url, socket_timeout=op_timeout_s,
                                            socket_connect_timeout=op_timeout_s,
                                            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._reconnect_after_s = reconnect_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.errors_by_reason: dict[str, int] = {}

    def count_error(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.errors_by_reason[reason] = self.errors_by_reason.get(reason, 0) + n

    def _usable(self) -> bool:
        if time.monotonic() < self._down_until:
            self.count_error("bypassed")
            return False
        return True

    def _failed(self, error: Exception) -> None:
        reason = "timeout" if isinstance(error, self._timeout_errors) else "connection"
        self.count_error(reason)
        self._down_until = time.monotonic() + self._reconnect_after_s

    def get_many(self, keys: list[str]) -> list[bytes | None] | None:
        """The stored values (None where absent), or None when Redis could not be asked."""
        if not self._usable():
            return None
        try:
            # One key (the usual single-pupdate request): GET costs redis-py less than MGET.
            values = [self._client.get(keys[0])] if len(keys) == 1 else self._client.mget(keys)
        except self._redis_errors as error:
            self._failed(error)
            return None
        if not isinstance(values, list) or len(values) != len(keys):
            self.count_error("garbage")
            return None
        return values

    def set_many(self, items: dict[str, bytes], ttl_s: float) -> bool:
        """Store ``items`` with a TTL, in one round trip; False (counted) on failure."""
        if not items or not self._usable():
            return False
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            if len(items) == 1:
                (key, value), = items.items()
                self._client.set(key, value, px=ttl_ms)
            else:
                pipeline = self._client.pipeline(transaction=False)
                for key, value in items.items():
                    pipeline.set(key, value, px=ttl_ms)
                pipeline.execute()
        except self._redis_errors as error:
            self._failed(error)
            return False
        return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.errors_by_reason)

    def close(self) -> None:
        self._client.close()
