"""A circuit breaker: stop calling a failing model, probe it again after a cool-down.

closed: every request goes to the model; K consecutive failures open the breaker.
open: requests are refused (answered by the fallback) until ``cooldown_s`` has passed.
half-open: exactly one request (the probe) goes to the model; its success closes the breaker,
its failure opens it for another cool-down. Requests arriving while the probe runs are refused.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures_to_open: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._failures_to_open = failures_to_open
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self._probe_running = False
        # Transitions so far, for the breaker's activity over time (read by the load worker).
        self.times_opened = 0
        self.times_probed = 0  # half-open: one request let through to the model
        self.times_closed = 0  # a probe answered: closed again

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self._cooldown_s:
                return HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """May this request call the model? In half-open state only the first caller may."""
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN and self._clock() - self._opened_at >= self._cooldown_s:
                self._state = HALF_OPEN
            if self._state == HALF_OPEN and not self._probe_running:
                self._probe_running = True
                self.times_probed += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._state != CLOSED:
                self.times_closed += 1
            self._state = CLOSED
            self._consecutive_failures = 0
            self._probe_running = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            if self._state == HALF_OPEN or self._consecutive_failures >= self._failures_to_open:
                if self._state != OPEN:
                    self.times_opened += 1
                self._state = OPEN
                self._opened_at = self._clock()
            self._probe_running = False

    def release(self) -> None:
        """The allowed request ended without judging the model (e.g. all rows were cache hits)."""
        with self._lock:
            self._probe_running = False
