"""Sending and timing requests inside one load-generator worker (gevent).

:class:`Sender` is what Locust users call. It times every request with ``time.monotonic``
(from the scheduled send time in an open loop, from the actual send in a closed loop), keeps
track of requests in flight, and fires Locust's ``request`` event with the unrounded latency and
a context holding the exact times, the lateness and the client's :class:`CallTiming`.
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, Iterator

import gevent
from gevent.queue import Queue

from poochlab.experiments.load.precise_timer import PreciseTimer

REQUEST_TYPE = "predict"


class Sender:
    """Sends requests through one shared predictor and reports each on the ``request`` event."""

    def __init__(self, predictor: Any, events: Any, kind: str, workload: Any, *, open_loop: bool,
                 rate_rps: float | None, seed: int, stream_base: int, stream_count: int,
                 start_at: float) -> None:
        self.predictor = predictor
        self.events = events
        self.kind = kind
        self.workload = workload
        self.open_loop = open_loop
        self.rate_rps = rate_rps
        self.seed = seed
        self.start_at = start_at
        self.stopping = False
        self._streams = itertools.count(stream_base)
        self.stream_count = stream_count
        self._in_flight: dict[int, float] = {}
        self._tokens = itertools.count()
        self._jobs: Queue = Queue()
        self._idle_senders = 0
        self.sender_greenlets = 0

    def next_stream(self) -> Iterator[list[Any]]:
        return self.workload.stream(next(self._streams), self.stream_count)

    def in_flight_started_before(self, moment: float) -> int:
        return sum(1 for start in self._in_flight.values() if start < moment)

    def send(self, request: list[Any], scheduled: float | None) -> None:
        """Send one request now and report it; ``scheduled`` is its planned time (open loop)."""
        from poochlab.clients.prediction import PredictionError

        token = next(self._tokens)
        sent = time.monotonic()
        start = sent if scheduled is None else scheduled
        self._in_flight[token] = start
        prediction = None
        exception: Exception | None = None
        try:
            prediction = self.predictor.predict(request)
        except PredictionError as error:
            exception = error
        except Exception as error:  # a client bug must show up as an error kind, not kill the user
            exception = error
        end = time.monotonic()
        del self._in_flight[token]
        self.events.request.fire(
            request_type=REQUEST_TYPE, name=self.kind, response_time=(end - start) * 1000.0,
            response_length=len(request), exception=exception,
            context={"start": start, "end": end, "lateness_s": None if scheduled is None else sent - scheduled,
                     "prediction": prediction},
        )

    # -- open loop -------------------------------------------------------------------------
    def run_open_loop(self, requests: Iterator[list[Any]]) -> None:
        """Poisson arrivals at ``rate_rps`` from ``start_at`` until stopped (one per worker)."""
        rng = random.Random(self.seed)
        rate = self.rate_rps
        assert rate is not None  # an open loop always has a rate (LoadSettings requires it)
        timer = PreciseTimer()
        for _ in range(4):
            self._spawn_sender()
        scheduled = self.start_at
        try:
            while not self.stopping:
                scheduled += rng.expovariate(rate)
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
