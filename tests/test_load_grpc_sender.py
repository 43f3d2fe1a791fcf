"""The gRPC load path (experiments/load/thread_sender.py): blocking grpcio calls on OS threads
inside a gevent worker, recorded through Locust's request event.

Checked: answers are right against the echo server and the lab server, every request fires
exactly one event on the gevent side, errors arrive by kind, and an open loop measures from the
scheduled time (a fake clock with a planted late wake-up)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, Iterator

import gevent
import gevent.event
import pytest

from poochlab.clients.config import ClientConfig
from poochlab.clients.factory import build_predictor
from poochlab.clients.prediction import PATH_MODEL, ZERO_TIMING, Prediction, error_kind
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.load.echo_server import ECHO_LIKES, EchoServer, Stall, start_echo_server
from poochlab.experiments.load.thread_sender import ThreadSender
from poochlab.experiments.records import TrialRecord
from poochlab.models.facts import generate_pupdates

WAIT_S = 60.0  # a safety net only: every wait below ends on an event


class Events:
    """Locust's ``env.events`` as far as a sender uses it: ``events.request.fire(**kwargs)``;
    ``done`` is set once ``expected`` events have arrived."""

    def __init__(self, expected: int) -> None:
        self.request = self
        self.fired: list[dict[str, Any]] = []
        self.threads: set[int] = set()
        self.expected = expected
        self.done = gevent.event.Event()

    def fire(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)
        self.threads.add(threading.get_ident())
        if len(self.fired) >= self.expected:
            self.done.set()


def _sender(predictor: Any, events: Events, workload: Workload, *, open_loop: bool,
            rate: float | None = None) -> ThreadSender:
    return ThreadSender(predictor, events, "grpc", workload, open_loop=open_loop, rate_rps=rate, seed=7,
                        stream_base=0, stream_count=1, start_at=time.monotonic())


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.generated(500, seed=5)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with start_echo_server(grpc=True) as server:
        yield server


def test_an_open_loop_answers_from_the_echo_server_one_event_per_request(echo: EchoServer,
                                                                         workload: Workload) -> None:
    predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=echo.grpc_target))
    events = Events(expected=40)
    sender = _sender(predictor, events, workload, open_loop=True, rate=400.0)
    try:
        sender.start_open_loop(sender.next_stream())
        assert events.done.wait(WAIT_S)
        sender.stopping = True
        # Stopped: what was sent still answers, each exactly once.
        while sender.in_flight_started_before(float("inf")):
            gevent.sleep(0.01)
    finally:
        sender.close()
    sent = predictor.stats()["model_requests"]
    assert len(events.fired) == sent >= 40
    assert all(e["exception"] is None for e in events.fired)
    assert all(e["context"]["prediction"].likes == [ECHO_LIKES] for e in events.fired)
    assert len({e["context"]["start"] for e in events.fired}) == sent  # one event per scheduled send
    assert events.threads == {threading.get_ident()}  # fired on the gevent side, not the senders'
    predictor.close()


def test_a_closed_loop_user_gets_the_lab_servers_prediction(lab_server: Any) -> None:
    predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=lab_server.grpc_target))
    pupdates = generate_pupdates(3, seed=11)
    events = Events(expected=3)
    sender = _sender(predictor, events, Workload(tuple(pupdates)), open_loop=False)
    try:
        for pupdate in pupdates:
            sender.send([pupdate], scheduled=None)  # returns once its event has fired
    finally:
        sender.close()
    assert len(events.fired) == 3
    for event in events.fired:
        assert event["exception"] is None, event["exception"]
        prediction = event["context"]["prediction"]
        assert prediction.path == PATH_MODEL and len(prediction.likes) == 1 and prediction.likes[0] >= 0
        assert event["context"]["lateness_s"] is None  # a closed loop has no schedule
        assert event["response_time"] == pytest.approx(1000 * (event["context"]["end"] - event["context"]["start"]))
    predictor.close()


def test_a_deadline_exceeded_is_counted_as_a_timeout(workload: Workload) -> None:
    with start_echo_server(grpc=True, stall=Stall(ms=60_000, every_s=120.0)) as stalled:
        predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=stalled.grpc_target, timeout_s=0.2))
        events = Events(expected=2)
        sender = _sender(predictor, events, workload, open_loop=False)
        try:
            stream = sender.next_stream()
            for _ in range(2):
                sender.send(next(stream), scheduled=None)
        finally:
            sender.close()
            predictor.close()
    assert [error_kind(e["exception"]) for e in events.fired] == ["timeout", "timeout"]
    assert all(e["context"]["prediction"] is None for e in events.fired)


def test_a_server_that_is_down_is_counted_as_a_connection_failure(workload: Workload) -> None:
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nobody listens once this closes
    predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=f"127.0.0.1:{port}", timeout_s=2.0))
    events = Events(expected=1)
    sender = _sender(predictor, events, workload, open_loop=False)
    try:
        sender.send(next(sender.next_stream()), scheduled=None)
    finally:
        sender.close()
        predictor.close()
    assert [error_kind(e["exception"]) for e in events.fired] == ["connection"]


class FakeTime:
    """Each thread's own clock: ``sleep`` wakes ``late_s`` after its deadline, a prediction
    takes ``call_s``. Per thread, so that threads running side by side do not move each other's
    time and every expected value follows from the schedule alone."""

    def __init__(self, start: float, late_s: float, call_s: float) -> None:
        self.start, self.late_s, self.call_s = start, late_s, call_s
        self._local = threading.local()

    def clock(self) -> float:
        return getattr(self._local, "now", self.start)

    def sleep(self, seconds: float) -> None:
        self._local.now = self.clock() + seconds + self.late_s

    def predict(self, request: list[Any], timeout_s: float | None = None) -> Prediction:
        self._local.now = self.clock() + self.call_s
        return Prediction(likes=[1.0] * len(request), paths=(PATH_MODEL,) * len(request), timing=ZERO_TIMING)

    def stats(self) -> dict[str, Any]:
        return {}


def test_an_open_loop_measures_from_the_scheduled_time_not_from_the_late_send(workload: Workload) -> None:
    start, rate, late_s, call_s, count = 1000.0, 5.0, 0.002, 0.005, 30
    rng = random.Random(7)  # the sender's seed: its Poisson schedule, computed here independently
    schedule = list(itertools.accumulate((rng.expovariate(rate) for _ in range(count)), initial=start))[1:]
    # Precondition of the exact expectations: no thread's previous request overruns its next slot.
    assert min(b - a for a, b in zip(schedule, schedule[1:])) > late_s + call_s
    fake = FakeTime(start, late_s, call_s)
    events = Events(expected=count)
    sender = ThreadSender(fake, events, "grpc", workload, open_loop=True, rate_rps=rate, seed=7, stream_base=0,
                          stream_count=1, start_at=start, clock=fake.clock, sleep=fake.sleep)
    try:
        sender.start_open_loop(sender.next_stream())
        assert events.done.wait(WAIT_S)
        sender.stopping = True
    finally:
        sender.close()
    first = sorted(events.fired, key=lambda e: e["context"]["start"])[:count]
    assert [e["context"]["start"] for e in first] == schedule
    for event in first:
        context = event["context"]
        assert context["lateness_s"] == pytest.approx(late_s)
        assert context["end"] == pytest.approx(context["start"] + late_s + call_s)
        assert event["response_time"] == pytest.approx(1000 * (late_s + call_s))  # from the schedule: 7 ms


def test_a_trial_sends_grpc_on_threads_and_records_every_answer(echo: EchoServer, workload: Workload) -> None:
    settings = LoadSettings(mode="open", rate_rps=200, window_s=0.5, warmup_s=0.2, min_windows=2, max_windows=2)
    record = TrialRecord(run_id="test", trial_id="grpc-threads", config_id="grpc", repetition=0, factors={}, seed=1)
    measure_trial(settings, ClientConfig(protocol="grpc", grpc_target=echo.grpc_target), workload, record,
                  server_pid=echo.pid)
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind == {} and record.outstanding_at_end == 0
    assert sum(w.requests for w in record.windows) == record.answer_paths["model"] > 0
    assert record.generator.sender_greenlets == 0  # the greenlet sender was not used
    assert record.lateness_histogram  # every send's lateness, from the sending thread
