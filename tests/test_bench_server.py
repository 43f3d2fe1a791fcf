"""``poochlab bench server``: its echo + model call floors and the arithmetic of its verdicts."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from poochlab.experiments.bench.echo_servers import main as echo_main
from poochlab.experiments.bench.server import (
    ModelCallBaseline, Results, Row, checks, format_report, gap_split, grpc_request_bytes, start_echo,
)
from poochlab.experiments.recording.placement import Placement
from poochlab.processes.lifecycle import ProcessStartError

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps


def one_round(**rows: Row) -> Results:
    results = Results()
    results.rounds.append(dict(rows))
    return results


def rows_for(lab: float, echo: float, floor: float, compute: float) -> dict[str, Row]:
    """The same value as p50 and as CPU per request, for REST and gRPC alike."""
    out = {"compute": Row("compute", compute, compute)}
    for api in ("rest", "grpc"):
        out[f"lab_{api}"] = Row("lab", lab, lab)
        out[f"{api}_echo"] = Row("echo", echo, echo)
        out[f"{api}_echo_model"] = Row("echo + model", floor, floor)
    return out


def test_gap_split_factors_the_target_ratio_into_machine_and_lab_parts():
    results = one_round(**rows_for(lab=0.45, echo=0.1, floor=0.36, compute=0.2))
    split = gap_split(results)
    assert [what for what, _, _ in split] == ["REST p50 at c=1", "REST server CPU/request at c=8",
                                              "GRPC p50 at c=1", "GRPC server CPU/request at c=8"]
    for _, machine, lab in split:
        assert machine == pytest.approx(0.36 / 0.3)
        assert lab == pytest.approx(0.45 / 0.36)
        assert machine * lab == pytest.approx(0.45 / (0.1 + 0.2))  # the target's own ratio


def test_checks_hold_the_lab_to_1_15_times_echo_plus_compute():
    at_limit = one_round(**rows_for(lab=1.15 * 0.3, echo=0.1, floor=0.3, compute=0.2))
    assert all(check.met and check.trusted for check in checks(at_limit))
    above = one_round(**rows_for(lab=1.15 * 0.3 + 0.001, echo=0.1, floor=0.3, compute=0.2))
    assert not any(check.met for check in checks(above))
    assert [check.limit for check in checks(above)] == [pytest.approx(0.345)] * 4
    assert all(check.verdict == "NO" for check in checks(above))


def test_a_verdict_from_rounds_that_disagree_says_rerun():
    results = Results()
    for compute in (0.2, 0.21, 0.3):  # a neighbour's burst in the last round: the median is 0.21
        results.rounds.append(rows_for(lab=0.3, echo=0.1, floor=0.3, compute=compute))
    verdicts = {check.what: check for check in checks(results)}
    rest = verdicts["REST p50 at c=1 (ms)"]
    assert rest.met and not rest.trusted
    assert rest.verdict == "yes (rounds differ by up to 50%: rerun when the machine is quiet)"
    steady = Results()
    for compute in (0.2, 0.21, 0.22):
        steady.rounds.append(rows_for(lab=0.3, echo=0.1, floor=0.3, compute=compute))
    assert all(check.trusted for check in checks(steady))


def test_a_report_from_one_round_says_its_verdicts_cannot_be_checked_for_noise():
    single = format_report(one_round(**rows_for(lab=0.45, echo=0.1, floor=0.36, compute=0.2)))
    assert "One round: nothing shows whether" in single
    several = Results()
    for _ in range(3):
        several.rounds.append(rows_for(lab=0.45, echo=0.1, floor=0.36, compute=0.2))
    assert "One round" not in format_report(several)


def test_rows_show_the_median_of_the_rounds_not_their_mean():
    results = Results()
    for value in (0.1, 0.2, 0.9):
        results.rounds.append({"compute": Row("compute", value, value)})
    assert results.rows["compute"].p50_ms == 0.2


def _unpinned() -> Placement:
    """The lab's placement, pinning nothing (tests do not measure speed)."""
    return Placement(False, {}, "tests do not measure speed")


@pytest.fixture(scope="module")
def model_base(pooch_exports: dict[str, Path]) -> Path:
    return pooch_exports["small"] / "pooch_predictor"


def test_rest_echo_with_model_call_answers_the_request_bytes(model_base: Path):
    process, port = start_echo(_unpinned(), "httptools+model", model_base)
    try:
        body = b'{"instances": [{"hashtags": "#corgi", "country": "GB", "followers": 12}]}'
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(3):  # keep-alive: every request on one connection is answered
            connection.request("POST", "/v1/models/pooch_predictor:predict", body)
            answer = connection.getresponse()
            assert (answer.status, answer.read()) == (200, body)
        connection.close()
    finally:
        process.stop()


def test_grpc_echo_with_model_call_answers_the_request_bytes(model_base: Path):
    import grpc

    process, port = start_echo(_unpinned(), "grpc-sync+model", model_base)
    try:
        payload = grpc_request_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            assert call(payload, timeout=30) == payload
    finally:
        process.stop()


def test_echo_with_model_call_names_a_base_path_without_versions(tmp_path: Path):
    with pytest.raises(ProcessStartError) as error:
        start_echo(_unpinned(), "httptools+model", tmp_path)
    assert str(error.value).startswith("echo server httptools+model exited with code 1 before it was ready")
    assert f"no model version under {tmp_path}" in error.value.log_tail


def test_the_model_call_baseline_measures_in_its_child_and_stops_it(model_base: Path):
    baseline = ModelCallBaseline(_unpinned(), model_base, calls=20, seconds=0.2)
    try:
        row = baseline.measure()
        assert baseline.process.alive  # one child serves every round
        again = baseline.measure()
    finally:
        baseline.stop()
    assert not baseline.process.alive
    for measured in (row, again):
        assert measured.name == "(a) model compute, in-process signature call"
        assert (measured.p50_ms or 0) > 0 and (measured.cpu_ms_per_request or 0) > 0 and (measured.throughput or 0) > 0


def test_a_model_call_baseline_without_a_model_says_why_its_child_exited(tmp_path: Path):
    with pytest.raises(ProcessStartError) as error:
        ModelCallBaseline(_unpinned(), tmp_path, calls=20, seconds=0.2)
    assert str(error.value).startswith("model-call baseline exited with code 1 before it wrote its ready line")
    assert f"no model version under {tmp_path}" in error.value.log_tail


def test_echo_servers_refuse_an_unknown_kind_before_loading_anything():
    with pytest.raises(SystemExit, match="unknown echo server kind 'uvicorn\\+model'"):
        echo_main(["uvicorn+model", "1", "/nonexistent"])


def test_keeping_cpus_awake_holds_a_zero_latency_request_only_while_the_run_lasts(tmp_path: Path):
    """The PM QoS request is the 4-byte int 0, in force while the file is open: closed after."""
    import os

    from poochlab.experiments.bench.server import cpus_kept_awake

    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")

    def holders() -> int:
        target = os.path.realpath(device)
        return sum(1 for fd in os.listdir("/proc/self/fd")
                   if os.path.realpath(f"/proc/self/fd/{fd}") == target)

    with cpus_kept_awake(device):
        assert device.read_bytes() == b"\x00\x00\x00\x00"
        assert holders() == 1
    assert holders() == 0


def test_keeping_cpus_awake_names_the_device_it_cannot_open(tmp_path: Path):
    from poochlab.experiments.bench.server import cpus_kept_awake

    with pytest.raises(RuntimeError, match="no_such_device"):
        with cpus_kept_awake(tmp_path / "no_such_device"):
            pass


def test_the_report_names_each_target_rather_than_where_it_was_asked_for():
    report = format_report(one_round(**rows_for(lab=0.45, echo=0.1, floor=0.36, compute=0.2)))
    assert "| target (lab <= 1.15 x (matching echo + model compute)) | lab | limit | met |" in report
    assert "issue" not in report.lower()
