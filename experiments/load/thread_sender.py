"""Sending on OS threads inside a gevent (Locust) worker: the gRPC load path.

grpcio under gevent (``grpc.experimental.gevent.init_gevent``) hands every call's completion
through gevent's thread pool and poller; measured, that made the generator the bottleneck (p50
2.8x a bare blocking call loop against the same echo server, late sends from 1,200 req/s).
Here each request is sent with grpcio's plain blocking call on a real OS thread, the way the
bare loop sends it; the gevent side only starts work and records answers.

Open loop: the threads share the seeded Poisson schedule. A free thread claims the next slot,
sleeps until its scheduled time (a kernel sleep with 1 ns timer slack, on the sending thread
itself: no hand-off between the alarm and the send), sends, and claims again; several threads
sleep on successive slots at once. One wake-up per request besides the answer's (a leader/follower
hand-off, one more, measured 3-11% more CPU per request at 1,000/s). A thread that claims a slot already
due (every thread was busy) starts one more, so outstanding requests are never capped. Closed
loop: a Locust user's greenlet hands its request to an idle thread and waits for the answer.

Every latency runs from the scheduled time (open loop) or the send on the thread (closed loop:
the hand-off from the greenlet is the generator's time, not the server's) to the answer's
arrival, timestamped on the thread that sent and received it (``measured_span``). Answers are
handed to the gevent hub through a thread-safe async watcher, whose callback fires Locust's
``request`` event for each (the recorder's only input), with the same context as :class:`Sender`.

The predictor must be safe to call from OS threads while gevent runs (the plain gRPC transport
uses OS locks held only around counters and never yields inside them).
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from typing import Any, Callable, Iterator

import gevent
import gevent.event
from gevent.monkey import get_original

from poochlab.experiments.load.rate_schedule import Arrivals, constant
from poochlab.experiments.load.sender import REQUEST_TYPE
from poochlab.experiments.load.sender_base import SenderBase, measured_span

# The unpatched primitives: a gevent-patched ``threading`` would make greenlets, not threads.
_start_thread, _allocate_lock = get_original("_thread", ["start_new_thread", "allocate_lock"])
_os_sleep = get_original("time", "sleep")
_PR_SET_TIMERSLACK = 29


def _tight_timer_slack() -> None:
    """Ask the kernel to wake this thread at its deadline, not up to 50 us (the default) later."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the default slack stays


class _Slot:
    """One closed-loop thread: waits on ``wake`` for ``job``."""

    __slots__ = ("wake", "job")

    def __init__(self) -> None:
        self.wake = _allocate_lock()
        self.wake.acquire()
        self.job: tuple[Any, ...] | None = None


class ThreadSender(SenderBase):
    """The :class:`~poochlab.experiments.load.sender.Sender` interface, sending on OS threads.

    ``clock`` and ``sleep`` are the thread side's time (tests pass a fake clock to check what
    is measured from where).
    """

    def __init__(self, predictor: Any, events: Any, kind: str, workload: Any, *, open_loop: bool,
                 rate_rps: float | None, seed: int, stream_base: int, stream_count: int,
                 start_at: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = _os_sleep, arrivals: Arrivals | None = None) -> None:
        super().__init__(predictor, events, kind, workload, open_loop=open_loop, rate_rps=rate_rps, seed=seed,
                         stream_base=stream_base, stream_count=stream_count, start_at=start_at, arrivals=arrivals)
        # sender_greenlets stays 0: this sender uses threads instead
        self.sender_threads = 0
        self._clock = clock
        self._sleep = sleep
        self._answers: deque[tuple[Any, ...]] = deque()
        self._idle: list[_Slot] = []
        self._slots: list[_Slot] = []
        # Open loop: the schedule is claimed under _schedule_lock; _count_lock guards the count.
        self._schedule_lock = _allocate_lock()
        self._count_lock = _allocate_lock()
        self._requests: Iterator[list[Any]] | None = None
        self._closed = False
        self._watcher = gevent.get_hub().loop.async_()
        self._watcher.start(self._drain)

    # -- closed loop: called by a user's greenlet ----------------------------------------------
    def send(self, request: list[Any], scheduled: float | None) -> None:
        """Send one request on a thread and wait (this greenlet only) until it is recorded."""
        slot = self._idle.pop() if self._idle else self._new_slot()
        done = gevent.event.Event()
        start = self._clock() if scheduled is None else scheduled
        slot.job = (request, start, scheduled, done)
        slot.wake.release()
        done.wait()

    def _new_slot(self) -> _Slot:
        slot = _Slot()
        self._slots.append(slot)
        self.sender_threads += 1
        _start_thread(self._closed_loop_thread, (slot,))
        return slot

    def _closed_loop_thread(self, slot: _Slot) -> None:
        while True:
            slot.wake.acquire()
            job, slot.job = slot.job, None
            if job is None:
                return
            request, start, scheduled, done = job
            # Idle again before the answer is handed over, so the user's next request finds it.
            self._send_now(request, start, scheduled, done, then=lambda: self._idle.append(slot))

    # -- open loop -----------------------------------------------------------------------------
    def run_open_loop(self, requests: Iterator[list[Any]]) -> None:
        """Poisson arrivals at ``rate_rps`` from ``start_at`` until stopped (one user per worker)."""
        self.start_open_loop(requests)
        gevent.sleep(3600)  # the threads do the work; the runner stops this user

    def start_open_loop(self, requests: Iterator[list[Any]]) -> None:
        if self.arrivals is None and (not self.rate_rps or self.rate_rps <= 0):
            raise ValueError(f"an open loop needs a positive rate (got {self.rate_rps!r})")
        self._requests = requests
        if self.arrivals is None:
            self.arrivals = Arrivals(constant(self.rate_rps or 0.0), seed=self.seed, start_at=self.start_at)
        for _ in range(2):
            self._new_open_loop_thread()

    def _new_open_loop_thread(self) -> None:
        with self._count_lock:
            self.sender_threads += 1
        _start_thread(self._open_loop_thread, ())

    def _open_loop_thread(self) -> None:
        # Started by start_open_loop, after it checked the rate and set the requests.
        requests, arrivals = self._requests, self.arrivals
        assert requests is not None and arrivals is not None, "start_open_loop sets both"
        _tight_timer_slack()
        while not self.stopping:
            with self._schedule_lock:  # slots are claimed in schedule order, one thread each
                scheduled = arrivals.next()
                request = next(requests)
            if scheduled <= self._clock():
                # Due already: every thread was busy sending. One more, so that the number of
                # requests outstanding is never capped by the threads there are.
                self._new_open_loop_thread()
            while True:
                delay = scheduled - self._clock()
                if delay <= 0:
                    break
                self._sleep(delay)
            if self.stopping:
                return
            self._send_now(request, scheduled, scheduled, None)

    # -- both ------------------------------------------------------------------------------------
    def _send_now(self, request: list[Any], start: float, scheduled: float | None, done: Any,
                  then: Callable[[], None] | None = None) -> None:
        token = next(self._tokens)  # next() on a count is atomic under the GIL
        sent = self._clock()
        self._in_flight[token] = start
        prediction = exception = None
        try:
            prediction = self.predictor.predict(request)
        except Exception as error:  # a PredictionError, or a client bug: counted by kind either way
            exception = error
        returned = self._clock()
        if then is not None:
            then()
        lateness = None if scheduled is None else sent - scheduled
        span_start, end = measured_span(scheduled, sent, returned, prediction)
        self._answers.append((token, span_start, end, lateness, prediction, exception, request, done))
        # Every time: threads append side by side, so none can tell whether the hub was woken
        # for its answer; libev writes to its wake-up pipe only when no wake is pending yet.
        if not self._closed:  # a call cancelled by the channel's close answers after close()
            self._watcher.send()

    def _drain(self) -> None:
        # On the gevent hub (the watcher's callback): one request event per answer, in arrival
        # order. The listeners (recorder, Locust's stats) only count, never wait.
        fire = self.events.request.fire
        answers = self._answers
        while answers:
            token, start, end, lateness, prediction, exception, request, done = answers.popleft()
            fire(request_type=REQUEST_TYPE, name=self.kind, response_time=(end - start) * 1000.0,
                 response_length=len(request), exception=exception,
                 context={"start": start, "end": end, "lateness_s": lateness, "prediction": prediction,
                          "request": request})
            del self._in_flight[token]
            if done is not None:
                done.set()

    def close(self) -> None:
        """Stop sending; idle threads end, busy ones after their answer."""
        self.stopping = True
        for slot in self._slots:
            if slot.job is None and slot in self._idle:
                self._idle.remove(slot)
                slot.wake.release()
        self._closed = True
        self._watcher.stop()
