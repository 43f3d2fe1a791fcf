"""``--lab_max_queue``: load shedding. With that many requests already waiting for or running
the model, the next is refused at once (UNAVAILABLE, 503 on REST) instead of waiting.

TF Serving has no such limit without batching (its queue is unbounded: a request waits as long
as it must); with batching its queue refuses the same way when ``max_enqueued_batches`` are full
(serving/batching/scheduler.py). A planted ``--lab_fault_delay_ms`` counts as model time here:
it stands for a slow model.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterable, Iterator

from poochlab.serving.status import Code, ServingError

SHED_MESSAGE = "The server's queue is full"  # refusals start with this (clients may match it)


class Admission:
    """Counts the requests in the model stage; refuses one more than ``max_queue`` (0: never)."""

    def __init__(self, max_queue: int = 0) -> None:
        self.max_queue = max_queue
        self.admitted = 0
        self.shed = 0
        self._lock = threading.Lock()  # REST's loop and gRPC's threads admit side by side

    def refuse_if_full(self) -> None:
        """Refuse now, before the request is decoded, when no place is free: a refusal then costs
        the server little. :meth:`admit` still decides for the requests that pass."""
        if self.max_queue and self.admitted >= self.max_queue:
            with self._lock:
                self.shed += 1
            raise self._refusal()

    def _refusal(self) -> ServingError:
        return ServingError(Code.UNAVAILABLE, f"{SHED_MESSAGE} ({self.max_queue} requests waiting or running, "
                                              "--lab_max_queue): request shed")

    @contextmanager
    def admit(self) -> Iterator[None]:
        if not self.max_queue:
            yield
            return
        with self._lock:
            full = self.admitted >= self.max_queue
            if full:
                self.shed += 1
            else:
                self.admitted += 1
        if full:
            raise self._refusal()
        try:
            yield
        finally:
            with self._lock:
                self.admitted -= 1

    def metric_lines(self) -> Iterable[str]:
        """Prometheus lines (lab-only names), only when shedding is on."""
        if not self.max_queue:
            return
        yield "# HELP :lab:serving:queue_admitted Requests waiting for or running the model (--lab_max_queue)."
        yield "# TYPE :lab:serving:queue_admitted gauge"
        yield f":lab:serving:queue_admitted {self.admitted}"
        yield "# HELP :lab:serving:shed_count Requests refused because the queue was full (--lab_max_queue)."
        yield "# TYPE :lab:serving:shed_count counter"
        yield f":lab:serving:shed_count {self.shed}"
