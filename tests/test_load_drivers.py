"""The load-driver interface: wrk's result read into the trial's window, the one placement rule,
and real wrk, bare-loop and Locust runs against the echo server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from poochlab.experiments.drivers.interface import DriverError, LoadRun, one_window
from poochlab.experiments.drivers.wrk import RESULT_PREFIX, WrkDriver, parse_result, wrk_installed, wrk_script
from poochlab.experiments.recording.histograms import histogram_of, histogram_of_counts, percentile_us
from poochlab.experiments.recording.placement import Placement, bench_placement, core_plan


def _wrk_line(**fields: object) -> str:
    result = {"requests": 4, "duration_us": 2_000_000,
              "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
              "latency_us": [[100, 1], [200, 1], [300, 2]], "server_compute_ms": []}
    result.update(fields)
    return RESULT_PREFIX + json.dumps(result)


def test_wrk_result_becomes_one_window_with_its_whole_histogram() -> None:
    run = parse_result(f"Running 2s test\n{_wrk_line()}\n", "", ["wrk"])
    assert run.requests == 4 and run.errors == 0 and run.wall_s == 2.0
    assert run.throughput == 2.0
    # From the merged counts: 100, 200, 300, 300.
    assert run.percentile_us(25) == 100 and run.percentile_us(50) == 200 and run.percentile_us(75) == 300
    assert run.latency().get_total_count() == 4
    assert run.window.server_compute_histogram is None and run.server_compute() is None


def test_wrk_errors_are_kept_by_kind_and_server_timing_read_in_microseconds() -> None:
    line = _wrk_line(errors={"connect": 0, "read": 2, "write": 0, "status": 3, "timeout": 0},
                     server_compute_ms=[1.5, 2.5, 0.25])
    run = parse_result(line, "", ["wrk"])
    assert run.window.errors_by_kind == {"read": 2, "status": 3}
    assert run.errors == 5
    compute = run.server_compute()
    assert compute is not None and compute.get_total_count() == 3
    assert percentile_us(compute, 50) == 1500 and compute.get_min_value() == 250


def test_wrk_output_without_a_result_names_the_command() -> None:
    with pytest.raises(DriverError, match=r"(?s)wrk printed no result \(wrk -t1\).*unable to connect"):
        parse_result("", "unable to connect to 127.0.0.1:1", ["wrk", "-t1"])


def test_wrk_script_quotes_any_body_as_one_lua_string() -> None:
    script = wrk_script(b'{"a": [[1]], "b": "]=]"}')
    assert 'wrk.body = [==[{"a": [[1]], "b": "]=]"}]==]' in script
    assert "function response" not in script  # no per-response hook unless asked: it slows wrk
    assert "function response" in wrk_script(b"{}", server_timing=True)


def test_wrk_command_pins_and_keeps_whole_seconds() -> None:
    driver = WrkDriver("http://h/p", b"{}", connections=8, seconds=0.4, threads=2, timeout_s=5,
                       cpus=frozenset({3, 1}))
    assert driver.command(Path("/s.lua")) == [
        "taskset", "-c", "1,3", "wrk", "-t2", "-c8", "-d1s", "--timeout", "5s", "-s", "/s.lua", "http://h/p"]


def test_one_percentile_rule_for_samples_and_counts() -> None:
    # HdrHistogram's rule: the value reached by the count floor(p * n / 100 + 0.5), at least 1.
    samples = histogram_of([5.0, 1.0, 4.0, 2.0, 3.0, 0.2])  # 0.2 us counts as 1 us
    assert percentile_us(samples, 50) == 2 and percentile_us(samples, 100) == 5
    assert percentile_us(histogram_of_counts([(10, 9), (1000, 1)]), 90) == 10
    assert percentile_us(histogram_of(()), 50) is None
    run = LoadRun(one_window(histogram_of(()), 0), 1.0)
    assert run.percentile_us(99) is None and run.throughput == 0.0


def test_trials_rule_pins_only_with_a_core_to_spare() -> None:
    assert core_plan(1, False, True, [0, 1]) == (None, "2 cores: pinning 2 roles needs 3 (1 to spare), not pinned")
    assignment, reason = core_plan(1, True, True, [0, 1, 2, 3])
    assert assignment == {"generator0": [3], "redis": [2], "server": [0, 1]} and reason == "separate cores per role"
    assert core_plan(2, False, True, [4, 5, 6, 7])[0] == {"generator0": [7], "generator1": [6], "server": [4, 5]}


def test_benches_separate_generator_and_server_even_on_two_cores() -> None:
    # The instrument's benches need the generator and the server it is measured against apart.
    assert core_plan(1, False, True, [0, 1], spare=0) == ({"generator0": [1], "server": [0]},
                                                          "separate cores per role")
    assert core_plan(1, True, True, [0, 1], spare=0) == (None, "2 cores: pinning 3 roles needs 3, not pinned")
    if len(os.sched_getaffinity(0)) == 2:
        cores = sorted(os.sched_getaffinity(0))
        with_redis = bench_placement(redis=True)
        assert with_redis.pinned and with_redis.roles["redis"] == with_redis.roles["server"] == [cores[0]]
        assert bench_placement().roles == {"generator0": [cores[1]], "server": [cores[0]]}


def test_an_unpinned_bench_placement_leaves_affinity_alone() -> None:
    before = os.sched_getaffinity(0)
    placement = Placement(False, {}, "2 cores: not pinned")
    placement.pin_self()
    with placement.as_role("server"):
        assert os.sched_getaffinity(0) == before
    assert placement.cores("server") is None and os.sched_getaffinity(0) == before


def test_a_pinned_placement_starts_servers_on_their_cores_and_restores() -> None:
    import threading

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("two roles on cores of their own need two cores")
    # A plan as bench_placement makes (core_plan is tested above).
    placement = Placement(True, {"server": cores[:-1], "generator0": [cores[-1]]}, "separate cores per role")
    before = os.sched_getaffinity(0)
    seen: dict[str, set[int]] = {}

    def bench() -> None:  # on a thread of its own: the test runner's thread keeps its affinity
        placement.pin_self()
        seen["client"] = os.sched_getaffinity(0)
        with placement.as_role("server"):
            seen["starting a server"] = os.sched_getaffinity(0)
        seen["after"] = os.sched_getaffinity(0)
        placement.restore()
        seen["restored"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=bench)
    thread.start()
    thread.join()
    assert seen == {"client": {cores[-1]}, "starting a server": set(cores[:-1]), "after": {cores[-1]},
                    "restored": before}
    assert os.sched_getaffinity(0) == before


@pytest.mark.e2e
def test_real_wrk_bare_loop_and_locust_runs_fill_the_window() -> None:
    from poochlab.experiments.drivers.grpc_loop import GrpcLoopDriver
    from poochlab.experiments.drivers.locust_command import LocustCommandDriver
    from poochlab.experiments.load.echo_server import start_echo_server

    if not wrk_installed():
        pytest.fail("wrk is not installed (Debian: apt-get install wrk)")
    body = json.dumps({"instances": [{"hashtags": "#corgi", "country": "GB", "followers": 1}]}).encode()
    with start_echo_server(grpc=True) as echo:
        answered = WrkDriver(f"{echo.rest_url}/v1/models/pooch_predictor:predict", body, seconds=1).run()
        missing = WrkDriver(f"{echo.rest_url}/no/such/path", body, seconds=1).run()
        bare = GrpcLoopDriver(echo.grpc_target, 0.3).run()
        repo = Path(__file__).resolve().parents[1]
        locust = LocustCommandDriver(repo / "docker" / "locustfile.py", echo.rest_url, users=2, seconds=2,
                                     env={"POOCHLAB_GRPC_TARGET": echo.grpc_target}, cwd=repo).run()
    assert answered.requests > 0 and answered.errors == 0
    assert answered.latency().get_total_count() >= answered.requests  # wrk's own correction only adds
    assert missing.window.errors_by_kind.get("status") == missing.requests > 0
    assert bare.requests == bare.latency().get_total_count() > 0 and bare.cpu_s is not None
    # Locust's runner with the lab's recorder: the window is the file's merged histogram of every name.
    result = locust.details["result"]
    assert locust.requests == sum(section["count"] for section in result["by_name"].values()) > 0
    assert locust.latency().get_total_count() == locust.requests and locust.errors == 0
    assert locust.wall_s > 0
