"""What the REST and gRPC clients share: validation, the retry policy, counters.

A transport sends rows to the model server and nothing else; the cache and the supervisor
wrap it. Retry policy (stated, not hidden): one attempt by default; with ``retries`` > 0 only
a connection failure or an explicit "unavailable" answer (HTTP 503, gRPC UNAVAILABLE) is
tried again, at once, because those mean the server did not run the request. Timeouts and
every other error surface immediately.
"""

from __future__ import annotations

from typing import Any, Sequence

from poochlab.clients.config import ClientConfig
from poochlab.clients.pupdate_rows import validated_rows
from poochlab.clients.os_lock import os_lock
from poochlab.clients.prediction import KIND_CONNECTION, Prediction, PredictionError, PupdateLike

RETRYABLE_KINDS = frozenset({KIND_CONNECTION, "http_503", "grpc_UNAVAILABLE"})



class Transport:
    """Base of the REST and gRPC predictors: subclasses implement ``_call`` and ``model_versions``."""

    protocol = ""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._lock = os_lock()
        self._counts = {"model_requests": 0, "model_errors": 0, "model_retries": 0}
        self._errors_by_kind: dict[str, int] = {}

    def predict(self, pupdates: Sequence[PupdateLike], *, timeout_s: float | None = None) -> Prediction:
        return self.predict_rows(validated_rows(pupdates), timeout_s=timeout_s)

    def predict_rows(self, rows: list[dict[str, Any]], *, timeout_s: float | None = None,
                     version: int | None = None) -> Prediction:
        """Predict validated rows. ``version`` overrides the configured addressing (the cache
        pins the version its keys were made for)."""
        timeout = self.config.timeout_s if timeout_s is None else min(timeout_s, self.config.timeout_s)
        attempts_left = self.config.retries
        while True:
            try:
                prediction = self._call(rows, timeout, version)
            except PredictionError as error:
                retry = attempts_left > 0 and error.kind in RETRYABLE_KINDS
                self._count(error.kind, retry)
                if not retry:
                    raise
                attempts_left -= 1
                continue
            with self._lock:
                self._counts["model_requests"] += 1
            return prediction

    def _count(self, kind: str, retried: bool) -> None:
        with self._lock:
            self._counts["model_requests"] += 1
            self._counts["model_errors"] += 1
            self._counts["model_retries"] += int(retried)
            self._errors_by_kind[kind] = self._errors_by_kind.get(kind, 0) + 1

    def _call(self, rows: list[dict[str, Any]], timeout_s: float, version: int | None) -> Prediction:
        raise NotImplementedError

    def model_versions(self, timeout_s: float | None = None) -> list[int]:
        """The versions the server reports AVAILABLE for the configured model (or its label),
        ascending; TF Serving's "latest" is the last one."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"protocol": self.protocol, **self._counts, "model_errors_by_kind": dict(self._errors_by_kind)}

    def close(self) -> None:
        raise NotImplementedError
