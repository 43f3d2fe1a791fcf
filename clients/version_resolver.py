"""Which model version answers right now, so cache keys never mix versions.

REST answers do not say which version produced them, so the resolver asks the server's status
API (REST ``GET /v1/models/<name>``, gRPC ``ModelService.GetModelStatus``), takes the highest
AVAILABLE version (what TF Serving's "latest" serves; with a label, the label's version), and
asks again every ``refresh_s``. A version pinned in the config is used as is.

The refresh runs on the calling thread, so once per interval one request pays for a status
call; that cost is visible in its timing rather than hidden in a background thread.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from poochlab.clients.prediction import PredictionError


class VersionResolver:
    def __init__(self, list_versions: Callable[[float | None], list[int]], refresh_s: float,
                 pinned: int | None = None, timeout_s: float | None = None) -> None:
        self._list_versions = list_versions
        self._refresh_s = refresh_s
        self._pinned = pinned
        self._timeout_s = timeout_s
        self._version: int | None = pinned
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self.refresh_failures = 0
        self.changes = 0

    def current(self, timeout_s: float | None = None) -> int | None:
        """The version to key the cache with; None when it has never been learnt. A status call
        made now waits at most ``timeout_s`` (the request's remaining budget)."""
        if self._pinned is not None:
            return self._pinned
        if time.monotonic() - self._checked_at >= self._refresh_s and self._lock.acquire(blocking=False):
            # One caller refreshes; the others keep using the version known so far.
            try:
                self._refresh(timeout_s)
            finally:
                self._lock.release()
        elif self._version is None:
            with self._lock:  # first use: everyone waits for the first answer
                if self._version is None:
                    self._refresh(timeout_s)
        return self._version

    def _refresh(self, timeout_s: float | None) -> None:
        self._checked_at = time.monotonic()
        limits = [t for t in (self._timeout_s, timeout_s) if t is not None]
        try:
            versions = self._list_versions(min(limits) if limits else None)
        except PredictionError:
            self.refresh_failures += 1
            return
        latest = versions[-1] if versions else None
        if latest is not None and latest != self._version:
            if self._version is not None:
                self.changes += 1
            self._version = latest

    @property
    def known_version(self) -> int | None:
        """The version learnt so far, without asking the server."""
        return self._version

    def invalidate(self) -> None:
        """Ask again on the next call (the server no longer has the version we used)."""
        self._checked_at = float("-inf")
