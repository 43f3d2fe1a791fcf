"""What the REST and gRPC clients share: validation, the retry policy, counters, kept requests.

A transport sends rows to the model server and nothing else; the cache and the supervisor
wrap it. Retry policy (stated, not hidden): one attempt by default; with ``retries`` > 0 only
a connection failure or an explicit "unavailable" answer (HTTP 503, gRPC UNAVAILABLE) is
tried again, at once, because those mean the server did not run the request. Timeouts and
every other error surface immediately.
"""

from __future__ import annotations

from typing import Any, Sequence

from poochlab.clients.config import ClientConfig
from poochlab.clients.os_lock import os_lock
from poochlab.clients.prediction import KIND_CONNECTION, Prediction, PredictionError, PupdateLike
from poochlab.clients.pupdate_rows import validated_rows
from poochlab.models.pupdate import INPUT_COUNTRY, INPUT_FOLLOWERS, INPUT_HASHTAGS

RETRYABLE_KINDS = frozenset({KIND_CONNECTION, "http_503", "grpc_UNAVAILABLE"})
KEPT_REQUESTS = 4096  # one-row requests a transport keeps encoded (a workload's pool, bounded)
_SIGNATURE_INPUTS = (INPUT_HASHTAGS, INPUT_COUNTRY, INPUT_FOLLOWERS)


class Transport:
    """Base of the REST and gRPC predictors: subclasses implement ``_call``, ``_encode`` and
    ``model_versions``."""

    protocol = ""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._lock = os_lock()
        self._counts = {"model_requests": 0, "model_errors": 0, "model_retries": 0}
        self._errors_by_kind: dict[str, int] = {}
        self._kept: dict[tuple[Any, ...], bytes] = {}  # one-row requests, encoded (see request_bytes)

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

    def _encode(self, rows: list[dict[str, Any]], version: int | None) -> bytes:
        """The request's bytes on this transport's wire (JSON, or a serialized PredictRequest)."""
        raise NotImplementedError

    def request_bytes(self, rows: list[dict[str, Any]], version: int | None) -> bytes:
        """``_encode``'s bytes. A one-row request's are kept and sent again when the same row
        comes back (a load test draws its pupdates from a fixed pool), as any client may keep
        what it has serialized: the bytes are the same, and the call skips the encoder (3 us
        of JSON, 18 us of protobuf per call, hot; several times that after a wait)."""
        key = None
        if len(rows) == 1 and len(row := rows[0]) == len(_SIGNATURE_INPUTS):
            try:
                followers = row[INPUT_FOLLOWERS]  # its type too: 5, 5.0 and True are equal keys
                key = (row[INPUT_HASHTAGS], row[INPUT_COUNTRY], followers, type(followers), version)
                kept = self._kept.get(key)
            except (KeyError, TypeError):  # not a signature row, or a value that cannot be a key
                key = kept = None
            if kept is not None:
                return kept
        encoded = self._encode(rows, version)
        if key is not None and len(self._kept) < KEPT_REQUESTS:
            self._kept[key] = encoded
        return encoded

    def model_versions(self, timeout_s: float | None = None) -> list[int]:
        """The versions the server reports AVAILABLE for the configured model (or its label),
        ascending; TF Serving's "latest" is the last one."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"protocol": self.protocol, **self._counts, "model_errors_by_kind": dict(self._errors_by_kind)}

    def close(self) -> None:
        raise NotImplementedError
