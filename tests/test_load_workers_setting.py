"""A spec's ``[load] workers``: a number or "auto", validated with the file and key named, and
turned into each trial's generator processes by a stated rule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from poochlab.experiments.load.settings import PER_PROCESS_RATE_RPS, workers_for
from poochlab.experiments.sweep.spec import SpecError, load_spec
from poochlab.experiments.sweep.trial_execution import load_settings

SPEC = """
[sweep]
profile = "quick"
[factors]
protocol = ["rest", "grpc"]
rate_rps = [500, 2500]
[controls]
load_mode = "open"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workers.toml"
    path.write_text(text)
    return path


def test_workers_default_to_auto_and_take_a_number(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, SPEC)).load_workers == "auto"
    spec = load_spec(write(tmp_path, SPEC + "[load]\nworkers = 3\n"))
    assert spec.load_workers == 3
    assert spec.to_dict()["load_workers"] == 3


@pytest.mark.parametrize("value", ['"many"', "0", "65", "1.5", "true"])
def test_a_bad_workers_value_names_the_file_and_the_key(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, SPEC + f"[load]\nworkers = {value}\n")
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert str(path) in message
    assert "load.workers" in message
    assert '"auto"' in message


def test_auto_splits_an_open_loop_by_the_paths_per_process_rate() -> None:
    # 1200/s per grpcio process, 2000/s per lean REST or gRPC process (settings.PER_PROCESS_RATE_RPS).
    assert PER_PROCESS_RATE_RPS["grpc-grpcio"] == 1200.0 and PER_PROCESS_RATE_RPS["rest"] == 2000.0
    assert workers_for("auto", protocol="grpc", library="lean", mode="open", rate_rps=2000) == 1
    assert workers_for("auto", protocol="grpc", library="lean", mode="open", rate_rps=2500) == 2
    assert workers_for("auto", protocol="grpc", library="grpcio", mode="open", rate_rps=600) == 1
    assert workers_for("auto", protocol="grpc", library="grpcio", mode="open", rate_rps=1200) == 1
    assert workers_for("auto", protocol="grpc", library="grpcio", mode="open", rate_rps=2500) == 3
    assert workers_for("auto", protocol="rest", library="lean", mode="open", rate_rps=2500) == 2
    assert workers_for("auto", protocol="rest", library="requests", mode="open", rate_rps=900) == 2
    assert workers_for("auto", protocol="grpc", library="grpcio", mode="closed", users=16) == 1


def test_a_number_is_kept_but_a_closed_loop_never_gets_more_processes_than_users() -> None:
    assert workers_for(4, protocol="grpc", library="grpcio", mode="open", rate_rps=100) == 4
    assert workers_for(4, protocol="grpc", library="grpcio", mode="closed", users=2) == 2


def test_each_trial_of_a_sweep_gets_its_worker_count(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, SPEC))
    context = SimpleNamespace(spec=spec, calibration=None)
    chosen = {(protocol, rate): load_settings(context, {"protocol": protocol, "rate_rps": rate,
                                                        "client_library": "lean"}, 1).workers
              for protocol in ("rest", "grpc") for rate in (500, 2500)}
    assert chosen == {("rest", 500): 1, ("rest", 2500): 2, ("grpc", 500): 1, ("grpc", 2500): 2}  # 2500/2000
    fixed = load_spec(write(tmp_path, SPEC + "[load]\nworkers = 2\n"))
    settings = load_settings(SimpleNamespace(spec=fixed, calibration=None), {"protocol": "grpc", "rate_rps": 500}, 1)
    assert settings.workers == 2 and settings.rate_rps == 500


def test_the_worker_reads_the_same_word_for_the_thread_path_that_the_trial_sends() -> None:
    import ast
    from pathlib import Path

    from poochlab.experiments.load import worker_spec

    # The worker cannot import worker_spec before it patches with gevent, so it spells the word
    # itself; read it from its source rather than importing it (importing it patches this process).
    source = (Path(worker_spec.__file__).parent / "worker.py").read_text()
    assigned = {node.targets[0].id: node.value.value for node in ast.parse(source).body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)}
    assert assigned["THREADS_ARGUMENT"] == worker_spec.SENDS_ON_THREADS
