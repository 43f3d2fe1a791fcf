"""docker/compose.yaml, checked by a real Compose implementation that needs no engine.

Debian's `docker-compose` (v1, Python) validates the file and prints it fully resolved
(interpolation, profiles, relative paths); the tests read that resolved form, converted to JSON
with the YAML library of docker-compose's own interpreter (the lab's venv has no YAML parser).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from poochlab.processes.servers.nginx_config import COMPOSE_NGINX_VERSION

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
SCALED = "tfserving"
# Services whose containers read models or server configs: those mounts must be read-only.
READ_ONLY_TARGETS = {"/models", "/configs", "/app/models/servables", "/etc/nginx/nginx.conf"}


def _compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is missing: apt-get install docker-compose (make test installs it)"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("POOCHLAB_", "TFSERVING_"))}
    return subprocess.run(
        [compose, "-f", str(COMPOSE_FILE), *args],
        capture_output=True, text=True, env={**clean_env, **(env or {})}, timeout=60,
    )


def _resolved(env: dict[str, str] | None = None) -> dict:
    """`docker-compose config` with every profile, as a dict."""
    result = _compose("--profile", "lab", "--profile", "lab-server", "--profile", "locust", "config", env=env)
    assert result.returncode == 0, result.stderr
    interpreter = Path(shutil.which("docker-compose")).read_text().splitlines()[0].removeprefix("#!").split()
    converted = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=result.stdout, capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(converted.stdout)


@pytest.fixture(scope="module")
def services() -> dict:
    return _resolved()["services"]


def test_compose_file_is_valid() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_validation_rejects_a_broken_file(tmp_path: Path) -> None:
    # The validator is real: a typo in a key is an error, not ignored.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("expose:", "exposes:", 1))
    result = subprocess.run(
        [shutil.which("docker-compose"), "-f", str(broken), "config", "-q"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "exposes" in result.stderr


def test_every_service_is_there(services: dict) -> None:
    assert {"tfserving", "balancer", "redis", "lab", "lab-server", "locust-master", "locust-worker"} <= set(services)


def test_scaled_services_have_no_fixed_name_or_host_port(services: dict) -> None:
    # `--scale tfserving=N` (and locust-worker=N) needs N containers with distinct names and ports.
    for name in (SCALED, "locust-worker"):
        assert "container_name" not in services[name], name
        assert not services[name].get("ports"), name


def test_published_ports_bind_to_loopback_only(services: dict) -> None:
    published = [(name, port) for name, svc in services.items() for port in svc.get("ports", [])]
    assert published, "the balancer must publish TF Serving's ports"
    for name, port in published:
        assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_publish_address_is_an_explicit_opt_in() -> None:
    services = _resolved(env={"POOCHLAB_PUBLISH_ADDRESS": "0.0.0.0"})["services"]
    assert "0.0.0.0:5557:5557/tcp" in services["locust-master"]["ports"]


def test_balancer_publishes_tf_servings_ports(services: dict) -> None:
    ports = {str(p).split(":")[1] for p in services["balancer"]["ports"]}
    assert ports == {"8500", "8501"}


def test_models_and_configs_are_mounted_read_only(services: dict) -> None:
    seen = set()
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target, *mode = str(volume).split(":")
            if target in READ_ONLY_TARGETS:
                seen.add(target)
                assert mode == ["ro"], f"{name} mounts {target} writable"
    assert seen == READ_ONLY_TARGETS


def test_tfserving_image_is_pinned_to_the_labs_tensorflow_release(services: dict) -> None:
    import importlib.metadata

    image = services[SCALED]["image"]
    match = re.fullmatch(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", image)
    assert match, f"{image} is not pinned to an exact release"
    tf_major_minor = importlib.metadata.version("tensorflow").split(".")[:2]
    assert list(match.groups()[:2]) == tf_major_minor


def test_balancer_image_is_the_nginx_the_config_is_rendered_for(services: dict) -> None:
    image = services["balancer"]["image"]
    match = re.fullmatch(r"nginx:(\d+)\.(\d+)\.(\d+)(-alpine)?", image)
    assert match, f"{image} is not pinned to an exact release"
    assert tuple(int(part) for part in match.groups()[:3]) == COMPOSE_NGINX_VERSION


def test_lab_image_builds_from_the_repository_with_its_constraints(services: dict) -> None:
    build = services["lab"]["build"]
    assert Path(build["context"]) == REPO
    dockerfile = (REPO / build["dockerfile"]).read_text()
    assert "pip install -r constraints.txt" in dockerfile
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "." not in line.split()[1:-1]:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"


def test_tfserving_serves_the_mounted_config_files(services: dict) -> None:
    command = services[SCALED]["command"]
    flags = dict(f.removeprefix("--").split("=", 1) for f in command.split() if "=" in f)
    assert flags["port"] == "8500" and flags["rest_api_port"] == "8501"
    configs = next(v for v in services[SCALED]["volumes"] if v.split(":")[1] == "/configs").split(":")[0]
    for flag in ("model_config_file", "monitoring_config_file"):
        assert flags[flag].startswith("/configs/")
        assert (Path(configs) / flags[flag].removeprefix("/configs/")).is_file(), flag


def test_container_models_config_points_into_the_models_mount() -> None:
    from poochlab.serving.model_config import load_model_config

    config = load_model_config(REPO / "docker" / "tfserving" / "models.config")
    base_paths = [model.base_path for model in config.model_config_list.config]
    assert base_paths and all(path.startswith("/models/") for path in base_paths)


def test_extra_server_flags_reach_tfserving() -> None:
    flags = "--enable_batching --batching_parameters_file=/configs/batching.config"
    services = _resolved(env={"TFSERVING_FLAGS": flags})["services"]
    assert services[SCALED]["command"].split()[-2:] == flags.split()


@pytest.mark.parametrize("service", [SCALED, "lab-server"])
def test_server_command_lines_are_accepted_by_the_labs_flag_parser(services: dict, service: str) -> None:
    # The lab's server takes TF Serving's flags; an unknown or misspelt flag fails here.
    from poochlab.serving.flags import parse_flags

    flags = f"{services[service]['command']} --enable_batching --batching_parameters_file=/configs/batching.config"
    options = parse_flags(flags.split())
    assert options.model_config_file == "/configs/models.config"
    assert (options.port, options.rest_api_port) == (8500, 8501)
    if service == "lab-server":
        assert options.lab_bind_address == "0.0.0.0"


def test_batching_file_for_containers_is_valid() -> None:
    from poochlab.serving.batching.parameters import load_batching_parameters

    params = load_batching_parameters(REPO / "docker" / "tfserving" / "batching.config")
    assert params.max_batch_size == 32 and params.batch_timeout_micros == 0


def test_the_replica_count_comes_from_a_variable_so_no_command_resets_it() -> None:
    # `up`/`run` reset services they start to their configured scale: the scale lives in the file.
    default = _resolved()["services"][SCALED]["deploy"]["replicas"]
    four = _resolved(env={"POOCHLAB_TFSERVING_REPLICAS": "4"})["services"][SCALED]["deploy"]["replicas"]
    assert (int(default), int(four)) == (1, 4)


def test_locust_never_pulls_servers_onto_the_load_machine(services: dict) -> None:
    assert "depends_on" not in services["locust-master"]
    assert set(services["locust-worker"]["depends_on"]) == {"locust-master"}


def test_redis_is_reachable_on_the_compose_network_only(services: dict) -> None:
    assert not services["redis"].get("ports")
    published = _resolved(env={"POOCHLAB_PUBLISH_ADDRESS": "10.0.0.5"})["services"]["redis"]
    assert not published.get("ports")


def test_sweeps_in_the_lab_container_use_the_compose_redis(services: dict) -> None:
    assert services["lab"]["environment"]["POOCHLAB_REDIS_URL"] == "redis://redis:6379/0"
    assert "redis" in services


def test_the_lab_image_runs_as_the_host_user_who_owns_results() -> None:
    services = _resolved(env={"POOCHLAB_UID": "1234", "POOCHLAB_GID": "5678"})["services"]
    for name in ("lab", "locust-master"):  # the services that write into ../results
        assert services[name]["user"] == "1234:5678"
        assert services[name]["build"]["args"] == {"LAB_UID": "1234", "LAB_GID": "5678"}


def test_the_lab_image_has_what_sweeps_start_themselves() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if "apt-get install" in line)
    assert {"redis-server", "nginx-light", "util-linux"} <= set(install.split())


def test_the_compose_external_spec_addresses_the_balancer_by_service_name(services: dict) -> None:
    from poochlab.experiments.sweep.spec import load_spec

    spec = load_spec(REPO / "experiments" / "compose-external.toml")
    assert spec.server_kind == "external" and spec.external["host"] == "balancer"
    assert spec.external["behind_balancer"] is True
    container_ports = {str(p).split(":")[-1].split("/")[0] for p in services["balancer"]["ports"]}
    assert {str(spec.external["rest_port"]), str(spec.external["grpc_port"])} == container_ports
