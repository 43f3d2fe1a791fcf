"""Redis cache-aside in front of a transport: look up every row, ask the model for the misses,
store what it answered.

Keys: ``<prefix><SHA-256 hex>`` of the model name, the resolved model version, the signature
and the row's canonical JSON, so keys are stable across processes and machines (never
Python's ``hash()``), and a new version never reads an older version's entries. Model calls
are pinned to the version the keys were made for, so an entry always holds what that version
answered; when the server no longer has it (404 / NOT_FOUND) the version is resolved again.

Fail-open: Redis errors, timeouts and garbage values are counted as cache errors and the model
answers; the cache never fails a prediction. When the serving version cannot be learnt at
all, the cache is skipped (counted as "version_unknown").

Single flight (``CacheConfig.single_flight``, on by default): concurrent misses for the same
key in one process share one model call; the others wait for its answer (and share its
error). Under a skewed workload with concurrency this removes duplicate model calls, so the
server sees fewer requests than users send and a waiting request's latency is the remainder of
the first one's; it does nothing across processes (each Locust worker process has its
own flights).
Rows answered through a shared call report path "model" and are counted as
``single_flight_shared``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from poochlab.clients.config import CacheConfig
from poochlab.clients.pupdate_rows import canonical_row_json, validated_rows
from poochlab.clients.prediction import (
    KIND_TIMEOUT,
    PATH_CACHE,
    PATH_MODEL,
    CallTiming,
    Prediction,
    PredictionError,
    PupdateLike,
)
from poochlab.clients.redis_store import RedisStore, decode_value, encode_value
from poochlab.clients.transport import Transport
from poochlab.clients.version_resolver import VersionResolver

_VERSION_GONE_KINDS = frozenset({"http_404", "grpc_NOT_FOUND"})


def cache_key(prefix: str, model_name: str, version: int, signature_name: str, row: dict[str, Any]) -> str:
    """The Redis key of one row's prediction by one model version."""
    text = "\n".join((model_name, str(version), signature_name, canonical_row_json(row)))
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Flight:
    """One model call other requests for the same key are waiting on."""

    done: threading.Event = field(default_factory=threading.Event)
    likes: float | None = None
    error: PredictionError | None = None


class CachedPredictor:
    def __init__(self, inner: Transport, config: CacheConfig, store: RedisStore | None = None,
                 resolver: VersionResolver | None = None) -> None:
        self.inner = inner
        self.config = config
        client = inner.config
        self._model_name, self._signature = client.model_name, client.signature_name
        self._store = store or RedisStore(config.redis_url, config.op_timeout_s, config.reconnect_after_s)
        self.resolver = resolver or VersionResolver(inner.model_versions, config.version_refresh_s,
                                                    pinned=client.version, timeout_s=client.timeout_s)
        self._timeout_s = client.timeout_s
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._counts = {"cache_hits": 0, "cache_misses": 0, "single_flight_shared": 0}

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        return self.predict_rows(validated_rows(pupdates), timeout_s=timeout_s)

    def key_for(self, row: dict[str, Any], version: int) -> str:
        return cache_key(self.config.key_prefix, self._model_name, version, self._signature, row)

    def _lookup(self, rows: list[dict[str, Any]],
                timeout_s: float | None = None) -> tuple[int, list[str], list[float | None], CallTiming] | None:
        """The serving version, the rows' keys, their cached likes (None: miss) and the time
        it took; None when the version is unknown (the cache cannot be used)."""
        started = time.monotonic()
        version = self.resolver.current(timeout_s)  # now and then a status call to the server
        if version is None:
            self._store.count_error("version_unknown")
            return None
        resolved = time.monotonic()
        keys = [self.key_for(row, version) for row in rows]
        keyed = time.monotonic()
        stored = self._store.get_many(keys)
        looked_up = time.monotonic()
        likes: list[float | None] = [None] * len(rows)
        garbage = 0
        for index, data in enumerate(stored or ()):
            if data is not None:
                try:
                    likes[index] = decode_value(data)
                except ValueError:
                    garbage += 1
        if garbage:
            self._store.count_error("garbage", garbage)
        misses = sum(value is None for value in likes)
        with self._lock:
            self._counts["cache_hits"] += len(rows) - misses
            self._counts["cache_misses"] += misses
        decoded = time.monotonic()
        # Resolving the version is waiting on the server, not encoding.
        timing = CallTiming(encode_us=(keyed - resolved) * 1e6, wait_us=(looked_up - keyed + resolved - started) * 1e6,
                            decode_us=(decoded - looked_up) * 1e6, cache_wait_us=(looked_up - keyed) * 1e6,
                            sent_at=started, answered_at=looked_up)  # from started: resolving may ask the server
        return version, keys, likes, timing

    def lookup_rows(self, rows: list[dict[str, Any]]) -> tuple[list[float | None], CallTiming]:
        """Cached likes only (None where missing), never calling the model: what the supervisor
        can still serve while its circuit breaker keeps the model out."""
        found = self._lookup(rows)
        if found is None:
            return [None] * len(rows), CallTiming(0.0, 0.0, 0.0)
        _, _, likes, timing = found
        return likes, timing

    def predict_rows(self, rows: list[dict[str, Any]], *, timeout_s: float | None = None) -> Prediction:
        budget = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        started = time.monotonic()
        found = self._lookup(rows, budget)
        if found is None:
            return self.inner.predict_rows(rows, timeout_s=self._remaining(budget, started))
        version, keys, likes, timing = found
        missing = [index for index, value in enumerate(likes) if value is None]
        paths = [PATH_MODEL if value is None else PATH_CACHE for value in likes]
        model_version = None
        if missing:
            remaining = self._remaining(budget, started)
            model_timing, model_version = self._fill_misses(rows, keys, missing, likes, version, remaining)
            timing = timing.plus(model_timing)
        answered = [value for value in likes if value is not None]
        assert len(answered) == len(likes)  # _fill_misses filled every miss (or raised)
        return Prediction(likes=[float(value) for value in answered], paths=tuple(paths), timing=timing,
                          model_version=model_version if model_version is not None else version)

    @staticmethod
    def _remaining(budget: float, started: float) -> float:
        remaining = budget - (time.monotonic() - started)
        if remaining <= 0:
            raise PredictionError(KIND_TIMEOUT, f"no time left for the model after the cache ({budget} s)")
        return remaining

    def _fill_misses(self, rows: list[dict[str, Any]], keys: list[str], missing: list[int],
                     likes: list[float | None], version: int, timeout_s: float) -> tuple[CallTiming, int | None]:
        """Ask the model for the missing rows (or wait for a flight already asking), store answers."""
        lead, follow = missing, []
        led: dict[str, tuple[int, _Flight]] = {}
        if self.config.single_flight:
            lead = []
            with self._lock:
                for index in missing:
                    key = keys[index]
                    if key in self._flights:
                        follow.append((index, self._flights[key]))
                    else:
                        self._flights[key] = _Flight()
                        led[key] = (index, self._flights[key])
                        lead.append(index)
        timing = CallTiming(0.0, 0.0, 0.0)
        answered_version = None
        try:
            if lead:
                timing, answered_version = self._ask_model(rows, keys, lead, likes, version, timeout_s)
        except PredictionError as error:
            for _, flight in led.values():
                flight.error = error
            raise
        finally:
            with self._lock:
                for key, (index, flight) in led.items():
                    flight.likes = likes[index]
                    del self._flights[key]
                    flight.done.set()
        if follow:
            timing = timing.plus(self._wait_for_flights(follow, likes, timeout_s - timing.wait_us / 1e6))
        return timing, answered_version

    def _ask_model(self, rows: list[dict[str, Any]], keys: list[str], lead: list[int], likes: list[float | None],
                   version: int, timeout_s: float) -> tuple[CallTiming, int | None]:
        try:
            answer = self.inner.predict_rows([rows[i] for i in lead], timeout_s=timeout_s, version=version)
        except PredictionError as error:
            if error.kind in _VERSION_GONE_KINDS:
                self.resolver.invalidate()
            raise
        for index, value in zip(lead, answer.likes):
            likes[index] = value
        # Only store what the version the keys were made for answered.
        if answer.model_version is None or answer.model_version == version:
            stored_at = time.monotonic()
            self._store.set_many({keys[i]: encode_value(v) for i, v in zip(lead, answer.likes)}, self.config.ttl_s)
            stored = time.monotonic()
            store_us = (stored - stored_at) * 1e6
            timing = answer.timing.plus(CallTiming(0.0, store_us, 0.0, cache_wait_us=store_us,
                                                   sent_at=stored_at, answered_at=stored))
        else:
            self.resolver.invalidate()
            timing = answer.timing
        return timing, answer.model_version

    def _wait_for_flights(self, follow: list[tuple[int, _Flight]], likes: list[float | None],
                          timeout_s: float) -> CallTiming:
        """Wait for the flights other callers lead; the wait as a call's timing."""
        started = time.monotonic()
        for index, flight in follow:
            if not flight.done.wait(max(0.0, timeout_s - (time.monotonic() - started))):
                raise PredictionError(KIND_TIMEOUT, "timed out waiting for a shared model call")
            if flight.error is not None:
                raise PredictionError(flight.error.kind, f"shared model call failed: {flight.error.message}")
            likes[index] = flight.likes
        with self._lock:
            self._counts["single_flight_shared"] += len(follow)
        done = time.monotonic()
        return CallTiming(0.0, (done - started) * 1e6, 0.0, sent_at=started, answered_at=done)

    def stats(self) -> dict[str, Any]:
        errors = self._store.stats()
        with self._lock:
            counts = dict(self._counts)
        return {**counts, "cache_errors": sum(errors.values()), "cache_errors_by_reason": errors,
                "resolved_version": self.resolver.known_version,
                "version_changes": self.resolver.changes, "version_refresh_failures": self.resolver.refresh_failures,
                **self.inner.stats()}

    def close(self) -> None:
        self._store.close()
        self.inner.close()
