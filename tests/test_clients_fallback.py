"""The supervisor: deadline, bounds, historical baseline, circuit breaker, recorded paths.

A scripted inner predictor injects the model's failures (timeouts, 503s, absurd answers) that
the real server does not produce on demand; the last tests use the real REST transport against
a closed port (and a real Redis filled from the lab server).
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import pytest

from poochlab.clients import ClientConfig, FallbackConfig, PredictionError, build_predictor
from poochlab.clients.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from poochlab.clients.prediction import CallTiming, Prediction
from poochlab.clients.supervised_fallback import SupervisedPredictor
from poochlab.models.baseline import HistoricalBaseline

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

CORGI_PUG = {"hashtags": "#corgi #pug", "country": "US", "followers": 3}
UNKNOWN = {"hashtags": "#neverseen", "country": "US", "followers": 3}


class ScriptedModel:
    """Plays back outcomes: a list of likes is answered, a PredictionError is raised."""

    def __init__(self, *outcomes: list[float] | PredictionError) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[float | None] = []  # the timeout each call was given

    def predict_rows(self, rows: list[dict[str, Any]], *, timeout_s: float | None = None) -> Prediction:
        self.calls.append(timeout_s)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, PredictionError):
            raise outcome
        return Prediction(likes=outcome, paths=("model",) * len(rows), timing=CallTiming(1.0, 2.0, 3.0))

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def baseline_path(tmp_path: Path) -> Path:
    baseline = HistoricalBaseline(mean_likes=10.0, per_hashtag={"#corgi": 40.0, "#pug": 20.0},
                                  max_plausible_likes=500.0)
    return baseline.write(tmp_path / "historical_baseline.json")


def supervised(baseline_path: Path, model: ScriptedModel, clock: FakeClock | None = None, **kw: Any) -> SupervisedPredictor:
    config = FallbackConfig(baseline_path=baseline_path, **kw)
    return SupervisedPredictor(model, config, clock=clock or FakeClock())


@pytest.mark.parametrize("kind", ["timeout", "connection", "http_503", "grpc_UNAVAILABLE", "bad_response"])
def test_failure_answers_from_the_historical_baseline(baseline_path: Path, kind: str) -> None:
    model = ScriptedModel(PredictionError(kind, "injected"))
    predictor = supervised(baseline_path, model)
    prediction = predictor.predict([CORGI_PUG, UNKNOWN])
    # Known tags: the mean of their means; unknown tags: the overall mean.
    assert prediction.likes == [(40.0 + 20.0) / 2, 10.0]
    assert prediction.path == "fallback" and prediction.paths == ("fallback", "fallback")
    assert prediction.fallback_reason == kind
    stats = predictor.stats()
    assert stats["fallbacks_by_reason"] == {kind: 1}
    assert stats["fallback_rows"] == 2


def test_deadline_is_the_model_calls_timeout(baseline_path: Path) -> None:
    model = ScriptedModel([1.0], [2.0])
    predictor = supervised(baseline_path, model, deadline_s=0.05)
    assert predictor.predict([UNKNOWN]).path == "model"
    predictor.predict([UNKNOWN], timeout_s=0.01)  # a caller's tighter budget wins
    assert model.calls == [0.05, 0.01]


def test_out_of_bounds_rows_are_replaced_one_by_one(baseline_path: Path) -> None:
    model = ScriptedModel([5.0, -1.0, math.nan, 2000.0, math.inf])
    predictor = supervised(baseline_path, model, max_likes=1000.0)
    prediction = predictor.predict([UNKNOWN, CORGI_PUG, UNKNOWN, UNKNOWN, UNKNOWN])
    assert prediction.likes == [5.0, 30.0, 10.0, 10.0, 10.0]
    assert prediction.paths == ("model", "fallback", "fallback", "fallback", "fallback")
    assert prediction.path == "mixed"
    assert prediction.fallback_reason == "out_of_bounds"
    assert predictor.stats()["fallbacks_by_reason"] == {"out_of_bounds": 1}


def test_breaker_opens_after_k_consecutive_failures_and_probes_after_cooldown(baseline_path: Path) -> None:
    clock = FakeClock()
    failure = PredictionError("http_503", "injected")
    model = ScriptedModel([1.0], failure, failure, failure, failure, [7.0], [8.0])
    predictor = supervised(baseline_path, model, clock, breaker_failures=3, cooldown_s=5.0)
    assert predictor.predict([UNKNOWN]).path == "model"
    for _ in range(3):
        assert predictor.predict([UNKNOWN]).fallback_reason == "http_503"
    assert predictor.breaker.state == OPEN
    # Open: the model is not called at all.
    calls = len(model.calls)
    assert predictor.predict([UNKNOWN]).fallback_reason == "breaker_open"
    assert len(model.calls) == calls
    # After the cool-down one probe goes through; it fails, so the breaker opens again.
    clock.now += 5.0
    assert predictor.breaker.state == HALF_OPEN
    assert predictor.predict([UNKNOWN]).fallback_reason == "http_503"
    assert len(model.calls) == calls + 1
    assert predictor.predict([UNKNOWN]).fallback_reason == "breaker_open"
    # The next probe succeeds and closes it.
    clock.now += 5.0
    assert predictor.predict([UNKNOWN]).likes == [7.0]
    assert predictor.breaker.state == CLOSED
    assert predictor.predict([UNKNOWN]).likes == [8.0]
    stats = predictor.stats()
    assert stats["fallbacks_by_reason"] == {"http_503": 4, "breaker_open": 2}
    assert stats["breaker_state"] == CLOSED and stats["breaker_opened"] == 2
    # Its activity: opened twice, two probes (one failed, one answered), closed once.
    assert (stats["breaker_probes"], stats["breaker_closed"]) == (2, 1)


def test_a_success_resets_the_count_of_consecutive_failures(baseline_path: Path) -> None:
    failure = PredictionError("timeout", "injected")
    model = ScriptedModel(failure, failure, [1.0], failure, failure, [2.0])
    predictor = supervised(baseline_path, model, breaker_failures=3)
    paths = [predictor.predict([UNKNOWN]).path for _ in range(6)]
    assert paths == ["fallback", "fallback", "model", "fallback", "fallback", "model"]
    assert predictor.breaker.state == CLOSED


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown_s=1.0, clock=clock)
    breaker.record_failure()
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()          # the probe
    assert not breaker.allow()      # others while it runs
    breaker.record_success()
    assert breaker.allow() and breaker.allow()


def test_invalid_pupdates_are_the_callers_error_not_a_fallback(baseline_path: Path) -> None:
    model = ScriptedModel()
    predictor = supervised(baseline_path, model)
    with pytest.raises(ValueError, match="'hashtags' is missing"):
        predictor.predict([{"country": "US", "followers": 1}])
    assert model.calls == [] and predictor.stats()["fallback_requests"] == 0


def test_unreadable_baseline_is_named(tmp_path: Path) -> None:
    path = tmp_path / "historical_baseline.json"
    path.write_text('{"mean_likes": 3}')
    with pytest.raises(ValueError, match=r"historical_baseline.json: key 'per_hashtag' is missing"):
        build_predictor(ClientConfig(fallback=FallbackConfig(baseline_path=path)))


def test_real_transport_failure_falls_back_and_counts(baseline_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ClientConfig(rest_url=f"http://127.0.0.1:{port}",
                          fallback=FallbackConfig(baseline_path=baseline_path, breaker_failures=2))
    predictor = build_predictor(config)
    reasons = [predictor.predict([CORGI_PUG]).fallback_reason for _ in range(3)]
    assert reasons == ["connection", "connection", "breaker_open"]
    stats = predictor.stats()
    assert stats["model_errors_by_kind"] == {"connection": 2}
    assert stats["breaker_state"] == OPEN
    predictor.close()


def test_open_breaker_still_serves_what_the_cache_holds(baseline_path: Path, lab_server, redis_url: str) -> None:
    """The model server is unreachable; Redis is up and holds one of the two rows."""
    from poochlab.clients import CacheConfig

    served = build_predictor(ClientConfig(rest_url=lab_server.rest_url, cache=CacheConfig(redis_url=redis_url)))
    cached = served.predict([CORGI_PUG])
    served.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ClientConfig(rest_url=f"http://127.0.0.1:{port}", version=cached.model_version,
                          cache=CacheConfig(redis_url=redis_url),
                          fallback=FallbackConfig(baseline_path=baseline_path, breaker_failures=1))
    predictor = build_predictor(config)
    assert predictor.predict([UNKNOWN]).fallback_reason == "connection"  # opens the breaker
    answer = predictor.predict([CORGI_PUG, UNKNOWN])
    assert answer.paths == ("cache", "fallback") and answer.fallback_reason == "breaker_open"
    assert answer.likes == [cached.likes[0], 10.0]
    assert predictor.predict([CORGI_PUG]).path == "cache"
    stats = predictor.stats()
    assert stats["fallbacks_by_reason"] == {"connection": 1, "breaker_open": 1}
    assert stats["model_errors_by_kind"] == {"connection": 1}  # the open breaker kept the model out
    predictor.close()
