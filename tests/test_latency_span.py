"""What a request's latency spans: from its first byte on the wire (closed loop) or its scheduled
send time (open loop) to its last answer read, without the client's own encoding and decoding,
as wrk and k6 count it (experiments/load/sender_base.py ``measured_span``).

Checked with fixed stamps (the expected spans are written out, not computed by the code under
test), through both senders, and on the real clients against the lab server and Redis: each
call's wire stamps lie inside the caller's own clock readings around it, and leave out its
decoding.
"""

from __future__ import annotations

import time
from typing import Any

import gevent.event
import pytest

from poochlab.clients import CacheConfig, ClientConfig, build_predictor
from poochlab.clients.http_connection import HttpAnswer, KeepAliveConnection
from poochlab.clients.prediction import KIND_CONNECTION, PATH_MODEL, CallTiming, Prediction, PredictionError
from poochlab.experiments.load import Workload
from poochlab.experiments.load.sender import Sender
from poochlab.experiments.load.sender_base import measured_span
from poochlab.experiments.load.thread_sender import ThreadSender

CORGI = {"hashtags": "#corgi #adorable", "country": "US", "followers": 120}
WAIT_S = 60.0  # a safety net only: every wait below ends on an event


def _prediction(sent_at: float | None, answered_at: float | None) -> Prediction:
    timing = CallTiming(encode_us=3.0, wait_us=400.0, decode_us=12.0, sent_at=sent_at, answered_at=answered_at)
    return Prediction(likes=[1.0], paths=(PATH_MODEL,), timing=timing)


# -- the rule, with fixed stamps -------------------------------------------------------------------
def test_a_closed_loop_request_runs_from_its_send_to_its_answer() -> None:
    # The sender stamped 10.000 and 10.010 around the call; the client sent at 10.002, got the
    # answer at 10.007 and then decoded until 10.010.
    assert measured_span(None, 10.000, 10.010, _prediction(10.002, 10.007)) == (10.002, 10.007)


def test_an_open_loop_request_runs_from_its_scheduled_time_to_its_answer() -> None:
    # Due at 9.990, sent late at 10.000: the lateness counts, the decoding does not.
    assert measured_span(9.990, 10.000, 10.010, _prediction(10.002, 10.007)) == (9.990, 10.007)


def test_a_call_without_wire_stamps_runs_between_the_senders_own_stamps() -> None:
    assert measured_span(None, 10.000, 10.010, None) == (10.000, 10.010)  # a failed request
    assert measured_span(None, 10.000, 10.010, _prediction(None, None)) == (10.000, 10.010)  # a baseline answer
    assert measured_span(9.990, 10.000, 10.010, None) == (9.990, 10.010)


def test_two_calls_are_on_the_wire_from_the_first_send_to_the_last_answer() -> None:
    lookup = CallTiming(1.0, 100.0, 2.0, cache_wait_us=100.0, sent_at=5.000, answered_at=5.001)
    model = CallTiming(3.0, 400.0, 12.0, sent_at=5.002, answered_at=5.006)
    both = lookup.plus(model)
    assert (both.sent_at, both.answered_at) == (5.000, 5.006)
    assert (both.encode_us, both.wait_us, both.decode_us) == (4.0, 500.0, 14.0)
    baseline = CallTiming(0.0, 0.0, 7.0)  # no wire: the other call's stamps stand
    assert (baseline.plus(model).sent_at, baseline.plus(model).answered_at) == (5.002, 5.006)
    assert (model.plus(baseline).sent_at, model.plus(baseline).answered_at) == (5.002, 5.006)


# -- through the senders ---------------------------------------------------------------------------
class Events:
    """``env.events`` as far as a sender uses it; ``done`` is set at the first event."""

    def __init__(self) -> None:
        self.request = self
        self.fired: list[dict[str, Any]] = []
        self.done = gevent.event.Event()

    def fire(self, **kwargs: Any) -> None:
        self.fired.append(kwargs)
        self.done.set()


class StampedPredictor:
    """Answers at once, with wire stamps far from the sender's clock so they cannot be confused."""

    def __init__(self, sent_at: float, answered_at: float) -> None:
        self.stamps = (sent_at, answered_at)

    def predict(self, request: list[Any], timeout_s: float | None = None) -> Prediction:
        return _prediction(*self.stamps)

    def stats(self) -> dict[str, Any]:
        return {}


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.generated(20, seed=5)


def test_the_gevent_sender_reports_the_wire_span_of_a_closed_loop_request(workload: Workload) -> None:
    events = Events()
    sender = Sender(StampedPredictor(50.002, 50.006), events, "rest-lean", workload, open_loop=False, rate_rps=None,
                    seed=1, stream_base=0, stream_count=1, start_at=time.monotonic())
    sender.send(next(sender.next_stream()), scheduled=None)
    [event] = events.fired
    assert (event["context"]["start"], event["context"]["end"]) == (50.002, 50.006)
    assert event["response_time"] == pytest.approx(4.0)  # milliseconds
    assert event["context"]["lateness_s"] is None


def test_the_thread_sender_reports_the_wire_span_not_the_hand_off(workload: Workload) -> None:
    events = Events()
    sender = ThreadSender(StampedPredictor(70.001, 70.003), events, "rest-lean", workload, open_loop=False,
                          rate_rps=None, seed=1, stream_base=0, stream_count=1, start_at=time.monotonic())
    try:
        gevent.spawn(sender.send, next(sender.next_stream()), None)
        assert events.done.wait(WAIT_S)
    finally:
        sender.close()
    [event] = events.fired
    assert (event["context"]["start"], event["context"]["end"]) == (70.001, 70.003)
    assert event["response_time"] == pytest.approx(2.0)


# -- the real clients ------------------------------------------------------------------------------
def _inside(timing: CallTiming, before: float, after: float) -> None:
    """The wire stamps lie between the caller's clock readings, and the decoding after them."""
    assert timing.sent_at is not None and timing.answered_at is not None
    assert before <= timing.sent_at < timing.answered_at <= after
    assert timing.answered_at + timing.decode_us / 1e6 <= after + 1e-6
    assert timing.decode_us > 0  # there was decoding to leave out


@pytest.mark.e2e
@pytest.mark.parametrize("protocol,library", [("rest", "lean"), ("grpc", "lean"), ("grpc", "grpcio")])
def test_a_model_call_is_stamped_on_the_wire(lab_server: Any, protocol: str, library: str) -> None:
    predictor = build_predictor(ClientConfig(protocol=protocol, library=library, rest_url=lab_server.rest_url,
                                             grpc_target=lab_server.grpc_target))
    try:
        predictor.predict([CORGI])  # connects: the call below is a kept-alive one
        before = time.monotonic()
        timing = predictor.predict([CORGI]).timing
        after = time.monotonic()
    finally:
        predictor.close()
    _inside(timing, before, after)
    # The wait holds the wire span (and, around it, the connection pool's few lines of Python).
    assert 0 < (timing.answered_at - timing.sent_at) * 1e6 <= timing.wait_us + 1.0


@pytest.mark.e2e
def test_a_cached_call_is_on_the_wire_from_the_lookup_to_the_store(lab_server: Any, redis_url: str) -> None:
    predictor = build_predictor(ClientConfig(rest_url=lab_server.rest_url, library="lean",
                                             cache=CacheConfig(redis_url=redis_url, op_timeout_s=0.5)))
    try:
        before = time.monotonic()
        miss = predictor.predict([CORGI])
        between = time.monotonic()
        hit = predictor.predict([CORGI])
        after = time.monotonic()
    finally:
        predictor.close()
    assert (miss.path, hit.path) == ("model", "cache")
    _inside(miss.timing, before, between)
    _inside(hit.timing, between, after)
    # A miss waits on Redis twice and on the model once: its span holds every wait.
    assert (miss.timing.answered_at - miss.timing.sent_at) * 1e6 >= miss.timing.wait_us - 1.0
    assert miss.timing.cache_wait_us > 0 and miss.timing.server_compute_us is not None


class _DroppedOnce(KeepAliveConnection):
    """A reused connection the server had closed: the first send fails, the resend answers."""

    def __init__(self) -> None:
        self._reused, self.sends = True, 0

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
              timeout_s: float) -> HttpAnswer:
        self.sends += 1
        if self.sends == 1:
            raise PredictionError(KIND_CONNECTION, "closed while idle")
        return HttpAnswer(200, b"{}", None, sent_at=30.5, received_at=30.6)

    def close(self) -> None:
        pass


def test_a_resent_request_leaves_its_wire_span_to_the_caller() -> None:
    # The failed first attempt was on the wire before the resend's stamps: the answer keeps no
    # stamps, so the predictor's own (taken before the first attempt) bound the span.
    connection = _DroppedOnce()
    answer = connection.request("POST", "/v1/models/m:predict", b"{}", {}, 1.0)
    assert connection.sends == 2
    assert (answer.status, answer.sent_at, answer.received_at) == (200, None, None)
