"""TF Serving's own config files for one server configuration of a sweep.

The runner writes these into ``results/<run>/configs/<server_config_id>/`` and starts the
server with them, so the very files a run used are kept beside its results and can be handed
to a real ``tensorflow_model_server`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poochlab.models.pupdate import MODEL_NAME

MONITORING_PATH = "/monitoring/prometheus/metrics"
# session_bundle_config.proto: these are wrapper messages (`max_batch_size { value: 32 }`), while
# allowed_batch_sizes (repeated int64) and pad_variable_length_inputs (bool) are plain fields.
_WRAPPED = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
            "enable_large_batch_splitting", "max_execution_batch_size")
_PLAIN_BOOL = ("pad_variable_length_inputs",)


@dataclass(frozen=True)
class ServerConfig:
    """The server-side factors of a trial; trials sharing one share a server process."""

    model_variant: str
    models_served: int
    batching: str  # "off" or the name of a batching set
    server_threads: int
    replicas: int
    # "on"/"off": a model_rollout fault's new version carries warm-up records (None: no rollout).
    rollout_warmup: str | None = None
    max_queue: int = 0  # --lab_max_queue (0: unbounded)
    scaling: str = "fixed"  # "reactive": replicas is the minimum, a policy adds more (sweep/scaling.py)

    @property
    def config_id(self) -> str:
        # The newer factors only when set, so runs saved before them keep their ids.
        return (f"{self.model_variant}-m{self.models_served}-b{self.batching}"
                f"-t{self.server_threads}-r{self.replicas}"
                + (f"-w{self.rollout_warmup}" if self.rollout_warmup else "")
                + (f"-q{self.max_queue}" if self.max_queue else "")
                + (f"-s{self.scaling}" if self.scaling != "fixed" else ""))

    def model_names(self) -> list[str]:
        return [MODEL_NAME] + [f"{MODEL_NAME}_{i}" for i in range(2, self.models_served + 1)]


@dataclass(frozen=True)
class ConfigFiles:
    models_config: Path
    monitoring_config: Path
    batching_parameters: Path | None


def models_config_text(model_names: list[str], base_path: Path) -> str:
    """A ModelServerConfig serving ``base_path``'s latest version under each name."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = str(base_path)
        model.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def batching_parameters_text(fields: dict[str, Any]) -> str:
    """TF Serving's BatchingParameters text syntax, each field in the form its parser accepts."""
    lines: list[str] = []
    for name, value in fields.items():
        if name == "allowed_batch_sizes":
            lines.extend(f"allowed_batch_sizes: {int(size)}" for size in value)
        elif name in _WRAPPED:
            text = ("true" if value else "false") if isinstance(value, bool) else str(int(value))
            lines.append(f"{name} {{ value: {text} }}")
        elif name in _PLAIN_BOOL:
            lines.append(f"{name}: {'true' if value else 'false'}")
        else:
            raise ValueError(f"unknown batching field {name!r}")
    return "\n".join(lines) + "\n"


def monitoring_config_text() -> str:
    return f'prometheus_config {{\n  enable: true\n  path: "{MONITORING_PATH}"\n}}\n'


def write_config_files(directory: Path, server: ServerConfig, model_base_path: Path,
                       batching_sets: dict[str, dict[str, Any]]) -> ConfigFiles:
    directory.mkdir(parents=True, exist_ok=True)
    models = directory / "models.config"
    models.write_text(models_config_text(server.model_names(), model_base_path.resolve()))
    monitoring = directory / "monitoring.config"
    monitoring.write_text(monitoring_config_text())
    batching = None
    if server.batching != "off":
        batching = directory / "batching_parameters.config"
        batching.write_text(batching_parameters_text(batching_sets[server.batching]))
    return ConfigFiles(models, monitoring, batching)
