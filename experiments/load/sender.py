"""Sending and timing requests inside one load-generator worker (gevent).

:class:`Sender` is what Locust users call. It times every request with ``time.monotonic``
(from the scheduled send time in an open loop, from the actual send in a closed loop, to the
answer's arrival: :func:`~poochlab.experiments.load.sender_base.measured_span`), keeps
track of requests in flight, and fires Locust's ``request`` event with the unrounded latency and
a context holding the exact times, the lateness and the client's :class:`CallTiming`.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import gevent
from gevent.queue import Queue

from poochlab.experiments.load.precise_timer import PreciseTimer
from poochlab.experiments.load.sender_base import SenderBase, measured_span
from poochlab.experiments.load.rate_schedule import Arrivals, constant

REQUEST_TYPE = "predict"


class Sender(SenderBase):
    """Sends requests through one shared predictor and reports each on the ``request`` event."""

    def __init__(self, predictor: Any, events: Any, kind: str, workload: Any, *, open_loop: bool,
                 rate_rps: float | None, seed: int, stream_base: int, stream_count: int,
                 start_at: float, arrivals: Arrivals | None = None) -> None:
        super().__init__(predictor, events, kind, workload, open_loop=open_loop, rate_rps=rate_rps, seed=seed,
                         stream_base=stream_base, stream_count=stream_count, start_at=start_at, arrivals=arrivals)
        self._jobs: Queue = Queue()
        self._idle_senders = 0

    def send(self, request: list[Any], scheduled: float | None) -> None:
        """Send one request now and report it; ``scheduled`` is its planned time (open loop)."""
        from poochlab.clients.prediction import PredictionError

        token = next(self._tokens)
        sent = time.monotonic()
        self._in_flight[token] = sent if scheduled is None else scheduled  # in flight since
        prediction = None
        exception: Exception | None = None
        try:
            prediction = self.predictor.predict(request)
        except PredictionError as error:
            exception = error
        except Exception as error:  # a client bug must show up as an error kind, not kill the user
            exception = error
        returned = time.monotonic()
        del self._in_flight[token]
        start, end = measured_span(scheduled, sent, returned, prediction)
        self.events.request.fire(
            request_type=REQUEST_TYPE, name=self.kind, response_time=(end - start) * 1000.0,
            response_length=len(request), exception=exception,
            context={"start": start, "end": end, "lateness_s": None if scheduled is None else sent - scheduled,
                     "prediction": prediction, "request": request},
        )

    # -- open loop -------------------------------------------------------------------------
    def run_open_loop(self, requests: Iterator[list[Any]]) -> None:
        """Poisson arrivals (``arrivals``, else at ``rate_rps``) from ``start_at`` until stopped
        (one per worker)."""
        arrivals = self.arrivals or Arrivals(constant(self.rate_rps or 0.0), seed=self.seed, start_at=self.start_at)
        timer = PreciseTimer()
        for _ in range(4):
            self._spawn_sender()
        try:
            while not self.stopping:
                scheduled = arrivals.next()
                timer.wait_until(scheduled)
                if self.stopping:
                    break
                if self._idle_senders - self._jobs.qsize() <= 0:
                    self._spawn_sender()
                self._jobs.put((scheduled, next(requests)))
        finally:
            timer.close()
            for _ in range(self.sender_greenlets):
                self._jobs.put(None)
        gevent.sleep(3600)  # this user's work is done; the runner stops it

    def _spawn_sender(self) -> None:
        self.sender_greenlets += 1
        gevent.spawn(self._sender_loop)

    def _sender_loop(self) -> None:
        # One long-lived greenlet per concurrent request keeps its keep-alive connection.
        while True:
            self._idle_senders += 1
            job = self._jobs.get()
            self._idle_senders -= 1
            if job is None:
                return
            scheduled, request = job
            self.send(request, scheduled)
