"""Proof that the load generator measures right: stalls show, closed loops are corrected,
struggling generators and failing requests invalidate a trial (against the echo server)."""

from __future__ import annotations

from typing import Iterator

import pytest

from poochlab.clients.config import ClientConfig
from poochlab.experiments.load import LoadSettings, Workload, measure_trial
from poochlab.experiments.load.echo_server import EchoServer, Stall, start_echo_server
from poochlab.experiments.load.worker_spec import PLANT_BURNER_ENV, PLANT_STALL_ENV
from poochlab.experiments.recording.histograms import merge_encoded
from poochlab.experiments.records import TrialRecord

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

SHORT = dict(window_s=1.0, warmup_s=0.5, min_windows=3, max_windows=3)


@pytest.fixture(scope="module")
def workload() -> Workload:
    return Workload.generated(3000, seed=5)


@pytest.fixture(scope="module")
def stalling_server() -> Iterator[EchoServer]:
    """Stops answering for 200 ms once a second, like a server in a GC pause."""
    with start_echo_server(grpc=False, stall=Stall(ms=200, every_s=1.0)) as server:
        yield server


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with start_echo_server(grpc=True) as server:
        yield server


def _record(name: str) -> TrialRecord:
    return TrialRecord(run_id="test", trial_id=name, config_id=name, repetition=0, factors={}, seed=1)


def _p99(texts) -> float:
    return float(merge_encoded(texts).get_value_at_percentile(99))


def test_open_loop_p99_shows_the_stall(stalling_server: EchoServer, workload: Workload) -> None:
    record = measure_trial(LoadSettings(mode="open", rate_rps=150, **SHORT),
                           ClientConfig(rest_url=stalling_server.rest_url), workload, _record("open"),
                           server_pid=stalling_server.pid)
    assert record.status == "ok", record.failure_reason
    assert len(record.windows) == 3
    assert _p99(w.histogram for w in record.windows) >= 100_000
    assert record.lateness_histogram is not None
    assert record.generator.lateness_p99_us is not None
    assert all(w.corrected_histogram is None for w in record.windows)  # an open loop needs no correction


def test_closed_loop_is_reported_raw_and_corrected_and_the_correction_shows_what_it_hid(
        stalling_server: EchoServer, workload: Workload) -> None:
    record = measure_trial(LoadSettings(mode="closed", users=1, **SHORT),
                           ClientConfig(rest_url=stalling_server.rest_url), workload, _record("closed"))
    assert record.status == "ok", record.failure_reason
    raw = _p99(w.histogram for w in record.windows)
    corrected = _p99(w.corrected_histogram for w in record.windows)
    assert corrected >= 100_000
    assert corrected >= 2 * raw  # the closed loop's raw p99 hid most of the stall
    assert record.generator.expected_interval_us > 0
    # ... and the verdict says so, without calling the trial invalid.
    assert any(w.startswith("coordinated omission hides stalls") for w in record.validity.warnings)


def test_a_planted_cpu_burner_in_the_generator_marks_the_trial_invalid(
        echo: EchoServer, workload: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLANT_BURNER_ENV, "0.95")
    record = measure_trial(LoadSettings(mode="open", rate_rps=200, **SHORT),
                           ClientConfig(rest_url=echo.rest_url), workload, _record("burner"))
    assert record.status == "ok", record.failure_reason
    assert not record.validity.valid
    assert any("load generator" in reason or "late" in reason for reason in record.validity.reasons)


def test_requests_still_outstanding_at_the_end_count_as_timeouts_and_flag_the_trial(workload: Workload) -> None:
    # The server answers nothing during its first minute; the trial drains for only 50 ms.
    with start_echo_server(grpc=False, stall=Stall(ms=60_000, every_s=120.0)) as server:
        settings = LoadSettings(mode="open", rate_rps=50, window_s=1.0, warmup_s=0.2, min_windows=2,
                                max_windows=2, drain_s=0.05)
        record = measure_trial(settings, ClientConfig(rest_url=server.rest_url), workload, _record("outstanding"))
    assert record.outstanding_at_end > 0
    assert record.errors_by_kind == {"timeout": record.outstanding_at_end}
    assert sum(w.requests for w in record.windows) == 0
    # Nothing answered: no latency to report (a server that answers nothing is not a p99).
    # (a busy machine may also starve the generator: that is a second reason, not another verdict)
    assert not record.validity.valid and record.validity.kinds[0] == "no_data"
    assert any(f"timeout {record.outstanding_at_end}" in reason for reason in record.validity.reasons)


def test_failed_requests_are_counted_by_kind_apart_from_latencies(workload: Workload) -> None:
    unused = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    settings = LoadSettings(mode="closed", users=1, window_s=0.5, warmup_s=0.0, min_windows=1, max_windows=1)
    record = measure_trial(settings, ClientConfig(rest_url=unused, timeout_s=0.5), workload, _record("refused"))
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind.get("connection", 0) > 0
    assert sum(w.requests for w in record.windows) == 0
    assert not record.validity.valid


def test_two_generator_processes_merge_into_one_result(echo: EchoServer, workload: Workload) -> None:
    settings = LoadSettings(mode="closed", users=2, workers=2, window_s=1.0, warmup_s=0.5, min_windows=2,
                            max_windows=2)
    record = measure_trial(settings, ClientConfig(rest_url=echo.rest_url), workload, _record("two"),
                           server_pid=echo.pid)
    assert record.status == "ok", record.failure_reason
    assert len(record.resources.generator_cpu_percent) == 2
    assert sum(w.requests for w in record.windows) == record.answer_paths["model"] > 0
    assert record.resources.server_cpu_s is not None
    assert record.resources.energy_method in ("rapl", "estimate")
    assert set(record.client_timing_us) == {"encode_us", "wait_us", "decode_us"}


def test_grpc_user_makes_its_channel_after_gevent_init(echo: EchoServer, workload: Workload) -> None:
    settings = LoadSettings(mode="open", rate_rps=100, window_s=0.5, warmup_s=0.2, min_windows=1, max_windows=1)
    record = measure_trial(settings, ClientConfig(protocol="grpc", grpc_target=echo.grpc_target), workload,
                           _record("grpc"))
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind == {}
    assert record.windows[0].requests > 0


def test_a_closed_loop_on_the_lean_grpc_client_sends_from_its_users_greenlets(
        echo: EchoServer, workload: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    from poochlab.experiments.load.worker_spec import sends_on_threads

    monkeypatch.delenv("POOCHLAB_GRPC_SENDER", raising=False)
    lean = ClientConfig(protocol="grpc", library="lean", grpc_target=echo.grpc_target)
    grpcio = ClientConfig(protocol="grpc", library="grpcio", grpc_target=echo.grpc_target)
    assert not sends_on_threads(lean, closed_loop=True) and sends_on_threads(lean, closed_loop=False)
    assert sends_on_threads(grpcio, closed_loop=True) and not sends_on_threads(ClientConfig(rest_url=echo.rest_url))
    settings = LoadSettings(mode="closed", users=2, window_s=0.5, warmup_s=0.2, min_windows=1, max_windows=1)
    record = measure_trial(settings, lean, workload, _record("grpc-lean-closed"))
    assert record.status == "ok", record.failure_reason
    assert record.errors_by_kind == {} and record.windows[0].requests > 0
    monkeypatch.setenv("POOCHLAB_GRPC_SENDER", "threads")  # the comparison's way: on threads again
    assert sends_on_threads(lean, closed_loop=True)


def test_a_trial_measures_on_past_windows_the_generator_sent_late_in(
        echo: EchoServer, workload: Workload, monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator's hub blocks 40 ms every 200 ms for the first 1.5 s of measurement: windows 0
    # and 1 send late (p99 lateness tens of ms), later ones do not.
    monkeypatch.setenv(PLANT_STALL_ENV, "40,200,1.5")
    settings = dict(window_s=1.0, warmup_s=0.5, min_windows=3)
    cut_short = measure_trial(LoadSettings(mode="open", rate_rps=200, max_windows=3, **settings),
                              ClientConfig(rest_url=echo.rest_url), workload, _record("late-short"))
    assert cut_short.status == "ok", cut_short.failure_reason
    assert not cut_short.validity.valid and set(cut_short.validity.kinds) == {"generator_limited"}
    assert cut_short.generator.lateness_p99_us > 10_000

    measured_on = measure_trial(LoadSettings(mode="open", rate_rps=200, max_windows=8, **settings),
                                ClientConfig(rest_url=echo.rest_url), workload, _record("late-on"))
    assert measured_on.status == "ok", measured_on.failure_reason
    assert len(measured_on.windows) >= 5  # 0-2 and 1-3 each hold a late window
    assert min(measured_on.stable_windows) >= 2, measured_on.load.stability
    assert "2" in measured_on.load.late_windows  # windows 0-2 agreed but were late
    assert "measured on past a held-up generator" in measured_on.load.stability
    if measured_on.validity.valid:
        assert measured_on.generator.lateness_p99_us < 2_000
    else:  # the machine itself held the generator up later too: it measured to its limit first
        assert len(measured_on.windows) == 8, measured_on.validity.reasons
