"""`docker run` of the pinned tensorflow/serving image with the lab's generated configuration.

Inside the container, paths differ from the host's: each model base path is mounted read-only
under /models, the config files (models.config rewritten for those paths, batching and
monitoring copied as they are) under /configs, read-only too. The server keeps TF Serving's
own ports (8500 gRPC, 8501 REST) inside; they are published on 127.0.0.1 only.

The process the lab starts is the `docker run` client, not TF Serving: its CPU, memory and core
placement say nothing about the server. So the server's own process is found through
`docker inspect` (the container's init, whose child is tensorflow_model_server, seen from the
host's pid namespace); where the lab cannot see it (Docker Desktop's VM, a remote engine) the
server's resources are recorded as not measured. Cores are pinned with `--cpuset-cpus`
($POOCHLAB_DOCKER_CPUSET). The image is pulled before the readiness wait starts, with its own
timeout and Docker's own progress output, so a first pull never eats the server's start-up time.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Sequence

from poochlab.processes.servers.nginx_config import TFSERVING_GRPC_PORT, TFSERVING_REST_PORT
from poochlab.processes.servers.tfserving import IdentifiedServer, refuse_lab_flags

if TYPE_CHECKING:
    from poochlab.processes.servers.launcher import ServerSpec

# Same pin as docker/compose.yaml (a test keeps the two equal).
TFSERVING_IMAGE = "tensorflow/serving:2.21.0"
CONTAINER_MODELS = PurePosixPath("/models")
CONTAINER_CONFIGS = PurePosixPath("/configs")
CPUSET_ENV = "POOCHLAB_DOCKER_CPUSET"  # e.g. "2-5": the cores the container may run on
PULL_TIMEOUT_S = 1800.0  # a first pull of the ~500 MB image on a slow link
SERVER_PROCESS = "tensorflow_model_server"


@dataclass(frozen=True)
class Mount:
    """A read-only bind mount."""

    source: Path
    target: PurePosixPath

    def volume_flag(self) -> str:
        if ":" in str(self.source):
            raise ValueError(f"{self.source}: a path with ':' cannot be mounted with docker --volume")
        return f"--volume={self.source}:{self.target}:ro"


def container_models_config(models_config: Path, text: str | None = None) -> tuple[str, list[Mount]]:
    """models.config rewritten for the container, and the model mounts it needs.

    Models sharing a base path (one export served under several names) share one mount.
    """
    from google.protobuf import text_format

    from poochlab.serving.model_config import load_model_config, parse_model_config_text

    config = parse_model_config_text(text, str(models_config)) if text is not None else load_model_config(models_config)
    mounts: dict[Path, Mount] = {}
    for model in config.model_config_list.config:
        host = (models_config.parent / model.base_path).resolve()
        if host not in mounts:
            target = CONTAINER_MODELS / host.name
            taken = {m.target for m in mounts.values()}
            suffix = 2
            while target in taken:
                target, suffix = CONTAINER_MODELS / f"{host.name}_{suffix}", suffix + 1
            mounts[host] = Mount(host, target)
        model.base_path = str(mounts[host].target)
    return text_format.MessageToString(config), list(mounts.values())


def containerize_configs(
    models_config: Path,
    out_dir: Path,
    *,
    batching_parameters: Path | None = None,
    monitoring_config: Path | None = None,
) -> tuple[list[Mount], dict[str, str]]:
    """Write the container's config folder into `out_dir`; return the mounts and the
    config-file flags (flag name -> container path) to pass to the server."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text, mounts = container_models_config(models_config)
    (out_dir / "models.config").write_text(text)
    flags = {"model_config_file": str(CONTAINER_CONFIGS / "models.config")}
    for flag, source in (("batching_parameters_file", batching_parameters),
                         ("monitoring_config_file", monitoring_config)):
        if source is not None:
            shutil.copyfile(source, out_dir / Path(source).name)
            flags[flag] = str(CONTAINER_CONFIGS / Path(source).name)
    return [*mounts, Mount(out_dir.resolve(), CONTAINER_CONFIGS)], flags


def docker_run_argv(
    *,
    name: str,
    rest_port: int,
    grpc_port: int,
    mounts: Sequence[Mount],
    server_flags: Sequence[str],
    image: str = TFSERVING_IMAGE,
    cpuset: str | None = None,
    docker: str = "docker",
) -> list[str]:
    """The `docker run` command line: foreground (logs stream to the caller, stopping the
    client stops the container), removed on exit, ports on loopback only, every mount read-only.

    server_flags are tensorflow_model_server's flags with container paths and ports.
    """
    argv = [docker, "run", "--rm", "--init", f"--name={name}",
            f"--publish=127.0.0.1:{rest_port}:{TFSERVING_REST_PORT}",
            f"--publish=127.0.0.1:{grpc_port}:{TFSERVING_GRPC_PORT}"]
    argv += [mount.volume_flag() for mount in mounts]
    if cpuset is not None:
        argv.append(f"--cpuset-cpus={cpuset}")
    # The image's entry script adds --model_name/--model_base_path; run the binary itself.
    argv += ["--entrypoint=tensorflow_model_server", image, *server_flags]
    return argv


DOCKER = "docker"


def docker_command_for(
    spec: "ServerSpec", workdir: Path, *, image: str = TFSERVING_IMAGE, docker: str = "docker",
    cpuset: str | None = None,
) -> Callable[[int, int], list[str]]:
    """spec -> `docker run` command line on given host ports; writes the container's configs
    into `workdir` (mounted read-only at /configs)."""
    import dataclasses

    from google.protobuf import text_format

    from poochlab.processes.servers.launcher import tf_serving_flags
    from poochlab.serving.model_config import single_model_config

    refuse_lab_flags(spec, DOCKER)
    if spec.host != "127.0.0.1":
        raise ValueError(f"server kind {DOCKER!r} publishes on 127.0.0.1 only, not {spec.host}")
    models_config = spec.model_config_file
    if models_config is None:
        if spec.model_base_path is None:
            raise ValueError("ServerSpec needs model_config_file or model_base_path")
        models_config = workdir / "host-models.config"
        workdir.mkdir(parents=True, exist_ok=True)
        config = single_model_config(spec.model_name or "default", str(Path(spec.model_base_path).resolve()))
        models_config.write_text(text_format.MessageToString(config))
    mounts, files = containerize_configs(
        Path(models_config), workdir / "configs",
        batching_parameters=spec.batching_parameters_file, monitoring_config=spec.monitoring_config_file,
    )
    inside = dataclasses.replace(
        spec, model_config_file=Path(files["model_config_file"]), model_name=None, model_base_path=None,
        batching_parameters_file=_posix(files.get("batching_parameters_file")),
        monitoring_config_file=_posix(files.get("monitoring_config_file")),
    )
    flags = tf_serving_flags(inside, TFSERVING_REST_PORT, TFSERVING_GRPC_PORT)

    def command(rest_port: int, grpc_port: int) -> list[str]:
        return docker_run_argv(name=container_name(rest_port), rest_port=rest_port, grpc_port=grpc_port,
                               mounts=mounts, server_flags=flags, image=image, cpuset=cpuset, docker=docker)

    return command


def _posix(path: str | None) -> Path | None:
    # A path inside the container, for ServerSpec (which holds Paths): POSIX, as Path is on the
    # Linux hosts the docker kind runs on.
    return Path(path) if path is not None else None


def container_name(rest_port: int) -> str:
    """The container's name: unique per lab process and host port."""
    return f"poochlab-tfserving-{os.getpid()}-{rest_port}"


def server_pid_under(init_pid: int, process_name: str = SERVER_PROCESS) -> int | None:
    """The host pid of `process_name` at or under the container's init (`docker run --init`
    makes docker-init the container's first process and the server its child)."""
    import psutil

    try:
        init = psutil.Process(init_pid)
        for process in (init, *init.children(recursive=True)):
            if process.name() == process_name:
                return process.pid
    except psutil.Error:
        pass
    return None


def ensure_image(docker: str, image: str, *, timeout_s: float = PULL_TIMEOUT_S) -> bool:
    """Pull `image` unless the engine has it (True: pulled now). Docker's progress goes to
    stderr; a pull that fails or outlasts `timeout_s` is a clear error."""
    if subprocess.run([docker, "image", "inspect", image], capture_output=True).returncode == 0:
        return False
    print(f"pulling {image} before starting it (first run; up to {timeout_s / 60:.0f} min) ...",
          file=sys.stderr, flush=True)
    try:
        result = subprocess.run([docker, "pull", image], stdout=sys.stderr, stderr=sys.stderr, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{docker} pull {image}` did not finish within {timeout_s:.0f} s; "
                           "pull it yourself, then run again") from None
    if result.returncode != 0:
        raise RuntimeError(f"`{docker} pull {image}` failed with exit code {result.returncode} (output above)")
    return True


@dataclasses.dataclass
class RunningContainer(IdentifiedServer):
    """A TF Serving container. ``pid`` is the server inside it (None when the lab cannot see it),
    never the `docker run` client, which is ``client_pid``."""

    container: str = ""
    docker: str = "docker"
    _server_pid: int | None = dataclasses.field(default=None, repr=False)

    @property
    def client_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def pid(self) -> int | None:
        if self._server_pid is None and self.process is not None and self.process.poll() is None:
            inspect = subprocess.run([self.docker, "inspect", "--format", "{{.State.Pid}}", self.container],
                                     capture_output=True, text=True, timeout=30)
            init_pid = inspect.stdout.strip()
            if inspect.returncode == 0 and init_pid.isdigit() and int(init_pid) > 0:
                self._server_pid = server_pid_under(int(init_pid))
        return self._server_pid

    def resource_source(self) -> str:
        """What the lab's CPU, memory and energy figures for this server come from."""
        pid = self.pid
        if pid is None:
            return (f"not measured: no {SERVER_PROCESS} of container {self.container} is visible to the lab "
                    "(`docker inspect` gave no host pid the lab can read); the `docker run` client's "
                    "figures are not the server's, so none are recorded")
        return f"pid {pid}: {SERVER_PROCESS} in container {self.container} (found with `docker inspect`)"

    def resource_note(self) -> str:
        return self.resource_source()


def launch_docker(spec: "ServerSpec", *, image: str = TFSERVING_IMAGE, cpuset: str | None = None,
                  pull_timeout_s: float = PULL_TIMEOUT_S) -> RunningContainer:
    """Run the pinned TF Serving image for `spec` in the foreground (`docker run --rm`): its
    logs go to the spec's log file and stopping the server stops and removes the container.

    cpuset: the cores the container may use (`--cpuset-cpus`); default $POOCHLAB_DOCKER_CPUSET.
    The image is pulled first when the engine does not have it (see ensure_image).
    """
    import tempfile

    from poochlab.processes.servers.launcher import RunningServer, launch_command

    refuse_lab_flags(spec, DOCKER)  # before looking for docker: the spec itself is wrong
    docker = shutil.which("docker")
    if docker is None:
        raise FileNotFoundError("docker is not installed (server kind \"docker\" needs the Docker CLI and engine)")
    cpuset = cpuset if cpuset is not None else (os.environ.get(CPUSET_ENV) or None)
    ensure_image(docker, image, timeout_s=pull_timeout_s)
    workdir = (spec.log_file.parent / "docker" if spec.log_file else Path(tempfile.mkdtemp(prefix="poochlab-docker-")))
    server = launch_command(spec, docker_command_for(spec, workdir, image=image, docker=docker, cpuset=cpuset))
    fields = {f.name: getattr(server, f.name) for f in dataclasses.fields(RunningServer)}
    return RunningContainer(
        **fields, binary={"kind": DOCKER, "image": image, "docker": docker, "cpuset": cpuset},
        container=container_name(server.rest_port), docker=docker)
