"""The supervised fallback: a deadline, sanity bounds, a circuit breaker and the historical model.

Wraps any predictor (a transport, or the cache in front of one). A request is answered from
the historical baseline (``models/baseline.py``: mean likes per hashtag where the row's tags
are known, else the overall mean) when

- the model call fails: its ``PredictionError.kind`` is the reason ("timeout", "connection",
  "http_503", "grpc_UNAVAILABLE", ...). The deadline is passed down as the call's timeout, so a
  slow model is abandoned at the deadline and counted as "timeout";
- a row's answer is out of bounds (not finite, negative, or above ``max_likes``): that row
  alone is replaced, reason "out_of_bounds";
- the circuit breaker is open: reason "breaker_open", and the model is not called at all;
  when a cache is below the supervisor, rows it holds are still answered from it.

Every failed model call (including out-of-bounds answers) counts towards the breaker; a call
whose rows all came from the cache neither opens nor closes it. Invalid pupdates still raise
``ValueError``: that is the caller's bug, not the model's.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Sequence

from poochlab.clients.circuit_breaker import CircuitBreaker
from poochlab.clients.config import FallbackConfig
from poochlab.clients.pupdate_rows import validated_rows
from poochlab.clients.prediction import (
    PATH_CACHE,
    PATH_FALLBACK,
    PATH_MODEL,
    CallTiming,
    Prediction,
    PredictionError,
    PupdateLike,
    RowPredictor,
)
from poochlab.models.baseline import HistoricalBaseline
from poochlab.models.pupdate import INPUT_HASHTAGS

REASON_BREAKER_OPEN = "breaker_open"
REASON_OUT_OF_BOUNDS = "out_of_bounds"


def baseline_likes(baseline: HistoricalBaseline, hashtag_text: str) -> float:
    """The historical model's guess: the mean of the known tags' means, else the overall mean."""
    known = [baseline.per_hashtag[tag] for tag in hashtag_text.split() if tag in baseline.per_hashtag]
    return sum(known) / len(known) if known else baseline.mean_likes


class SupervisedPredictor:
    def __init__(self, inner: RowPredictor, config: FallbackConfig, baseline: HistoricalBaseline | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.config = config
        self.baseline = baseline if baseline is not None else HistoricalBaseline.read(config.baseline_path)
        self.breaker = CircuitBreaker(config.breaker_failures, config.cooldown_s, clock=clock)
        self._lock = threading.Lock()
        self._fallbacks: dict[str, int] = {}
        self._counts = {"supervised_requests": 0, "fallback_requests": 0, "fallback_rows": 0}

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        return self.predict_rows(validated_rows(pupdates), timeout_s=timeout_s)

    def predict_rows(self, rows: list[dict[str, Any]], *, timeout_s: float | None = None) -> Prediction:
        deadline = self.config.deadline_s if timeout_s is None else min(timeout_s, self.config.deadline_s)
        started = time.perf_counter()
        if not self.breaker.allow():
            return self._while_open(rows, started)
        try:
            answer = self.inner.predict_rows(rows, timeout_s=deadline)
        except PredictionError as error:
            self.breaker.record_failure()
            return self._fall_back(rows, error.kind, started)
        out_of_bounds = [i for i, likes in enumerate(answer.likes) if not self._plausible(likes)]
        if out_of_bounds:
            self.breaker.record_failure()
        elif PATH_MODEL in answer.paths:
            self.breaker.record_success()
        else:
            self.breaker.release()
        self._count(None if not out_of_bounds else REASON_OUT_OF_BOUNDS, len(out_of_bounds))
        if not out_of_bounds:
            return answer
        likes, paths = list(answer.likes), list(answer.paths)
        for index in out_of_bounds:
            likes[index] = baseline_likes(self.baseline, rows[index][INPUT_HASHTAGS])
            paths[index] = PATH_FALLBACK
        return Prediction(likes=likes, paths=tuple(paths), timing=answer.timing, model_version=answer.model_version,
                          fallback_reason=REASON_OUT_OF_BOUNDS)

    def _while_open(self, rows: list[dict[str, Any]], started: float) -> Prediction:
        """The model is kept out: rows the cache holds are served from it, the rest from the baseline."""
        lookup = getattr(self.inner, "lookup_rows", None)
        if lookup is None:
            return self._fall_back(rows, REASON_BREAKER_OPEN, started)
        cached, timing = lookup(rows)
        if all(value is None for value in cached):
            return self._fall_back(rows, REASON_BREAKER_OPEN, started)
        likes = [value if value is not None and self._plausible(value)
                 else baseline_likes(self.baseline, row[INPUT_HASHTAGS]) for value, row in zip(cached, rows)]
        paths = tuple(PATH_CACHE if value is not None and self._plausible(value) else PATH_FALLBACK for value in cached)
        fallback_rows = paths.count(PATH_FALLBACK)
        self._count(REASON_BREAKER_OPEN if fallback_rows else None, fallback_rows)
        return Prediction(likes=likes, paths=paths, timing=timing,
                          fallback_reason=REASON_BREAKER_OPEN if fallback_rows else None)

    def _plausible(self, likes: float) -> bool:
        return math.isfinite(likes) and 0.0 <= likes <= self.config.max_likes

    def _fall_back(self, rows: list[dict[str, Any]], reason: str, started: float) -> Prediction:
        failed_at = time.perf_counter()
        likes = [baseline_likes(self.baseline, row[INPUT_HASHTAGS]) for row in rows]
        done = time.perf_counter()
        self._count(reason, len(rows))
        # Time spent on the failed call counts as waiting; the baseline lookup as decoding.
        timing = CallTiming(encode_us=0.0, wait_us=(failed_at - started) * 1e6, decode_us=(done - failed_at) * 1e6)
        return Prediction(likes=likes, paths=(PATH_FALLBACK,) * len(rows), timing=timing, fallback_reason=reason)

    def _count(self, reason: str | None, rows: int) -> None:
        with self._lock:
            self._counts["supervised_requests"] += 1
            if reason is not None:
                self._counts["fallback_requests"] += 1
                self._counts["fallback_rows"] += rows
                self._fallbacks[reason] = self._fallbacks.get(reason, 0) + 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            fallbacks = dict(self._fallbacks)
        return {**counts, "fallbacks_by_reason": fallbacks, "breaker_state": self.breaker.state,
                "breaker_opened": self.breaker.times_opened, "breaker_probes": self.breaker.times_probed,
                "breaker_closed": self.breaker.times_closed, **self.inner.stats()}

    def close(self) -> None:
        self.inner.close()
