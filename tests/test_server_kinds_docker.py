"""Kind "docker": the `docker run` command line for the pinned TF Serving image.

No Docker engine here, so the test checks what would be run: the argument list, and the
container's copy of the configuration (models.config rewritten for the mounted paths).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poochlab.processes.servers.docker_run import TFSERVING_IMAGE, container_models_config, docker_command_for
from poochlab.processes.servers.launcher import ServerSpec, launch

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _models_config(path: Path, models: dict[str, Path]) -> Path:
    entries = "".join(f"  config {{ name: '{n}' base_path: '{b}' model_platform: 'tensorflow' }}\n"
                      for n, b in models.items())
    return _write(path, "model_config_list {\n" + entries + "}\n")


def test_docker_command_line(tmp_path: Path) -> None:
    exports = tmp_path / "servables" / "small" / "pooch_predictor"
    config = _models_config(tmp_path / "run" / "models.config", {"pooch_predictor": exports})
    monitoring = _write(tmp_path / "run" / "monitoring.config", 'prometheus_config { enable: true }\n')
    batching = _write(tmp_path / "run" / "batching_parameters.config", "max_batch_size { value: 8 }\n")
    spec = ServerSpec(kind="docker", model_config_file=config, monitoring_config_file=monitoring,
                      batching_parameters_file=batching, tensorflow_intra_op_parallelism=2,
                      rest_api_num_threads=8)
    workdir = tmp_path / "docker"

    argv = docker_command_for(spec, workdir, docker="/usr/bin/docker")(18501, 18500)

    name = argv[4]
    assert re.fullmatch(r"--name=poochlab-tfserving-\d+-18501", name)
    assert argv == [
        "/usr/bin/docker", "run", "--rm", "--init", name,
        "--publish=127.0.0.1:18501:8501",
        "--publish=127.0.0.1:18500:8500",
        f"--volume={exports}:/models/pooch_predictor:ro",
        f"--volume={workdir / 'configs'}:/configs:ro",
        "--entrypoint=tensorflow_model_server",
        "tensorflow/serving:2.21.0",
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/configs/models.config",
        "--enable_batching=true",
        "--batching_parameters_file=/configs/batching_parameters.config",
        "--monitoring_config_file=/configs/monitoring.config",
        "--rest_api_num_threads=8",
        "--tensorflow_intra_op_parallelism=2",
    ]
    # The mounted config folder holds what the flags name, for the container's paths.
    from poochlab.serving.model_config import load_model_config

    inside = load_model_config(workdir / "configs" / "models.config")
    assert [m.base_path for m in inside.model_config_list.config] == ["/models/pooch_predictor"]
    assert (workdir / "configs" / "batching_parameters.config").read_text() == batching.read_text()
    assert (workdir / "configs" / "monitoring.config").read_text() == monitoring.read_text()


def test_models_sharing_an_export_share_one_mount_and_names_never_collide(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "pooch_predictor", tmp_path / "b" / "pooch_predictor"
    config = _models_config(tmp_path / "models.config",
                            {"pooch_predictor": a, "pooch_predictor_2": a, "other": b})
    text, mounts = container_models_config(config)
    assert [(m.source, str(m.target)) for m in mounts] == [
        (a, "/models/pooch_predictor"), (b, "/models/pooch_predictor_2")]
    assert re.findall(r'base_path: "([^"]+)"', text) == [
        "/models/pooch_predictor", "/models/pooch_predictor", "/models/pooch_predictor_2"]


def test_single_model_flags_become_a_container_config(tmp_path: Path) -> None:
    spec = ServerSpec(kind="docker", model_name="half_plus_two", model_base_path=tmp_path / "hpt")
    argv = docker_command_for(spec, tmp_path / "docker")(1, 2)
    assert f"--volume={tmp_path / 'hpt'}:/models/hpt:ro" in argv
    assert argv[-3:] == ["--port=8500", "--rest_api_port=8501", "--model_config_file=/configs/models.config"]


def test_docker_publishes_on_loopback_only(tmp_path: Path) -> None:
    spec = ServerSpec(kind="docker", model_name="m", model_base_path=tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        docker_command_for(spec, tmp_path / "docker")


def test_image_is_the_one_compose_pins() -> None:
    compose = (REPO / "docker" / "compose.yaml").read_text()
    assert re.findall(r"image: (tensorflow/serving\S*)", compose) == [TFSERVING_IMAGE]


def test_unknown_kind_is_refused_by_the_launcher() -> None:
    with pytest.raises(ValueError, match="unknown server kind 'triton'"):
        launch(ServerSpec(kind="triton", model_name="m", model_base_path=Path("/nowhere")))


def test_cpuset_pins_the_container_not_the_client(tmp_path: Path) -> None:
    spec = ServerSpec(kind="docker", model_name="m", model_base_path=tmp_path / "m")
    argv = docker_command_for(spec, tmp_path / "docker", cpuset="2-3")(18501, 18500)
    # A `docker run` option: before the image, so it pins the container rather than reaching
    # tensorflow_model_server as a flag.
    assert argv.index("--cpuset-cpus=2-3") < argv.index("tensorflow/serving:2.21.0")
    assert not any(a.startswith("--cpuset") for a in docker_command_for(spec, tmp_path / "d2")(1, 2))


def test_the_server_pid_is_the_named_process_under_the_containers_init() -> None:
    import subprocess
    import sys

    from poochlab.processes.servers.docker_run import server_pid_under

    # A real process tree shaped like `docker run --init`: an init whose child is the server.
    # The init prints its child's pid once the child exists (no waiting on timing).
    init = subprocess.Popen([sys.executable, "-c", "import subprocess; child = subprocess.Popen(['sleep', '60']); "
                             "print(child.pid, flush=True); child.wait()"], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(init.stdout.readline())
        assert server_pid_under(init.pid, "sleep") == child_pid
        assert server_pid_under(init.pid, "tensorflow_model_server") is None
    finally:
        import os
        import signal

        os.kill(child_pid, signal.SIGKILL)
        init.wait()
        init.stdout.close()


def test_a_container_whose_server_the_lab_cannot_see_is_recorded_as_not_measured(tmp_path: Path) -> None:
    from poochlab.processes.servers.docker_run import RunningContainer

    # A stopped `docker run` client: its pid must never stand in for the server's.
    from poochlab.processes.lifecycle import ManagedProcess

    client = ManagedProcess(["true"]).start()
    client.wait()
    server = RunningContainer(spec=ServerSpec(kind="docker"), command=["docker", "run"], rest_port=1,
                              grpc_port=2, log_path=tmp_path / "log", process=client,
                              binary={"kind": "docker"}, container="poochlab-tfserving-1-1")
    assert server.client_pid == client.pid
    assert server.pid is None
    assert server.resource_source().startswith("not measured: no tensorflow_model_server of container "
                                               "poochlab-tfserving-1-1")


def _recording_docker(tmp_path: Path, has_image: bool) -> tuple[str, Path]:
    """A `docker` CLI stand-in (no engine here) that logs its arguments: the order of calls."""
    calls = tmp_path / "calls"
    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\n"
                      f'echo "$*" >> {calls}\n'
                      f'if [ "$1 $2" = "image inspect" ]; then exit {0 if has_image else 1}; fi\n'
                      "exit 0\n")
    script.chmod(0o755)
    return str(script), calls


@pytest.mark.parametrize("has_image, expected", [
    (True, ["image inspect tensorflow/serving:2.21.0"]),
    (False, ["image inspect tensorflow/serving:2.21.0", "pull tensorflow/serving:2.21.0"]),
])
def test_the_image_is_pulled_before_the_server_starts_only_when_missing(tmp_path: Path, has_image, expected) -> None:
    from poochlab.processes.servers.docker_run import ensure_image

    docker, calls = _recording_docker(tmp_path, has_image)
    assert ensure_image(docker, TFSERVING_IMAGE) is (not has_image)
    assert calls.read_text().splitlines() == expected


def test_a_failed_pull_is_a_clear_error(tmp_path: Path) -> None:
    from poochlab.processes.servers.docker_run import ensure_image

    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(RuntimeError, match=r"pull tensorflow/serving:2.21.0` failed with exit code 1"):
        ensure_image(str(script), TFSERVING_IMAGE)
