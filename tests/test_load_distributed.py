"""Locust's own distributed modes recording the lab's way (experiments/load/distributed_recording.py).

Real Locust processes run docker/locustfile.py against the echo server: a master with two workers,
and ``--processes 2`` (fork). The merged HdrHistograms must hold exactly the successful requests
Locust itself counted (only its counts are read from its --json-file, never its rounded percentiles),
failures must be counted by kind, and the merged percentiles must equal a merge by hand of
every worker report in the file. Locust is never imported here: it monkey-patches the process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from hdrh.histogram import HdrHistogram

from poochlab.experiments.load.echo_server import EchoServer, start_echo_server
from poochlab.processes.servers.launcher import free_port

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REPO = Path(__file__).resolve().parents[1]
LOCUST = str(Path(sys.executable).parent / "locust")
LOCUSTFILE = "docker/locustfile.py"
REST_NAME = "pooch_predictor:predict"
GRPC_NAME = "pooch_predictor:predict (grpc)"


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with start_echo_server(grpc=True) as server:
        yield server


@pytest.fixture()
def silent_grpc_target() -> Iterator[str]:
    """A port that accepts TCP connections and never answers: every gRPC call times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def _locust_counts(json_prefix: Path) -> dict[str, tuple[int, int]]:
    """(requests, failures) per request name from Locust's --json-file: its counts only.

    Not its --csv: Locust rewrites that file once a second, so the final reports can miss it;
    the JSON file is written at shutdown from the same statistics the final reports updated.
    """
    entries = json.loads(Path(f"{json_prefix}.json").read_text())
    return {entry["name"]: (entry["num_requests"], entry["num_failures"]) for entry in entries}


def _merge_by_hand(texts: list[str]) -> HdrHistogram:
    merged = HdrHistogram(1, 3_600_000_000, 3)
    for text in texts:
        merged.decode_and_add(text)
    return merged


def _assert_matches_locust(result: dict, counts: dict[str, tuple[int, int]]) -> None:
    recorded = result["warmup_excluded"]
    for name, (requests, failures) in counts.items():
        section = result["by_name"][name]
        recorded += section["count"] + sum(section["errors_by_kind"].values())
        if not result["warmup_excluded"]:
            assert section["count"] == requests - failures, name
            assert sum(section["errors_by_kind"].values()) == failures, name
    # Every request Locust counted is in the file: recorded, or left out as warm-up.
    assert recorded == sum(requests for requests, _ in counts.values())
    # Per name and overall, the merged histogram is exactly the merge of every worker report.
    for name in counts:
        by_hand = _merge_by_hand([r["by_name"][name]["histogram"] for r in result["reports"] if name in r["by_name"]])
        summary = result["by_name"][name]["summary"]
        assert by_hand.get_total_count() == result["by_name"][name]["count"]
        if by_hand.get_total_count():
            for percentile in (50.0, 90.0, 99.0, 99.9):
                assert summary[f"p{percentile:g}_us"] == by_hand.get_value_at_percentile(percentile)
            assert summary["max_us"] == by_hand.get_max_value()
    everything = _merge_by_hand([part["histogram"] for r in result["reports"] for part in r["by_name"].values()])
    assert result["aggregated"]["summary"]["count"] == everything.get_total_count()
    assert result["aggregated"]["summary"]["p99_us"] == everything.get_value_at_percentile(99.0)


def test_master_and_two_workers_merge_every_request_and_count_errors_by_kind(
        echo: EchoServer, silent_grpc_target: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "POOCHLAB_GRPC_TARGET": silent_grpc_target, "POOCHLAB_TIMEOUT_S": "0.3"}
    workers = [subprocess.Popen(
        [LOCUST, "-f", LOCUSTFILE, "--worker", "--master-host=127.0.0.1", f"--master-port={port}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    output = tmp_path / "hdr" / "merged.json"
    try:
        master = subprocess.run(
            [LOCUST, "-f", LOCUSTFILE, "--master", "--headless", "--expect-workers=2", "-u", "4", "-r", "4",
             "-t", "3s", "--master-bind-host=127.0.0.1", f"--master-bind-port={port}", f"--host={echo.rest_url}",
             f"--json-file={tmp_path / 'run'}", "--exit-code-on-error=0", f"--hdr-output={output}"],
            cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    assert master.returncode == 0, master.stderr[-3000:]
    result = json.loads(output.read_text())
    counts = _locust_counts(tmp_path / "run")
    assert set(counts) == {REST_NAME, GRPC_NAME}
    _assert_matches_locust(result, counts)
    assert len(result["workers"]) == 2  # both workers' reports reached the master
    assert result["by_name"][REST_NAME]["count"] > 0
    # Every gRPC call hit its deadline: counted as timeouts, never as latencies.
    assert result["by_name"][GRPC_NAME]["count"] == 0
    assert result["by_name"][GRPC_NAME]["errors_by_kind"] == {"timeout": counts[GRPC_NAME][1]}
    assert counts[GRPC_NAME][1] > 0
    assert f"all requests: n={result['aggregated']['count']} p50=" in master.stdout
    assert f"errors timeout={counts[GRPC_NAME][1]}" in master.stdout


def test_processes_mode_makes_grpc_channels_after_the_fork_and_leaves_out_the_warmup(
        echo: EchoServer, tmp_path: Path) -> None:
    output = tmp_path / "merged.json"
    env = {**os.environ, "POOCHLAB_GRPC_TARGET": echo.grpc_target, "LOCUST_HDR_OUTPUT": str(output),
           "LOCUST_HDR_WARMUP": "1"}
    run = subprocess.run(
        [LOCUST, "-f", LOCUSTFILE, "--processes=2", "--headless", "-u", "4", "-r", "4", "-t", "3s",
         f"--host={echo.rest_url}", f"--json-file={tmp_path / 'run'}"],
        cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(output.read_text())
    counts = _locust_counts(tmp_path / "run")
    _assert_matches_locust(result, counts)
    assert len(result["workers"]) == 2
    for name in (REST_NAME, GRPC_NAME):
        assert counts[name][1] == 0, name
        assert result["by_name"][name]["count"] > 0, name
    # The first of the 3 seconds stayed out of the histograms, and only it.
    assert 0 < result["warmup_excluded"] < result["aggregated"]["count"]
    assert result["aggregated"]["count"] + result["warmup_excluded"] == sum(n for n, _ in counts.values())
