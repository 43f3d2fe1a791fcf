"""``models.config``: TF Serving's ``ModelServerConfig`` text proto, and the one-model flags.

Parsed with ``tensorflow_serving.config.model_server_config_pb2`` and protobuf's text format,
so the lab reads exactly the files TF Serving reads. Errors name the file and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class InvalidProtobufFile(ValueError):
    """A config file protobuf's text parser refuses, worded as TF Serving prints it on stderr:
    the parser's ``Error parsing text-format <type>: <line>:<column>: <what>``, then
    ``Invalid protobuf file: '<path>'``."""

    def __init__(self, error: Any, source: str, message_type: str = "tensorflow.serving.ModelServerConfig") -> None:
        line, column = error.GetLine(), error.GetColumn()
        what = str(error)
        location = f"{line}:{column} : " if column else f"{line} : "
        if line is not None and what.startswith(location):
            what = what[len(location):]  # Python's parser puts the location first; C++'s wording has it below
        where = f"{line}:{column}: " if line is not None else ""
        super().__init__(f"Error parsing text-format {message_type}: {where}{what}\n"
                         f"Invalid protobuf file: '{source}'")


def parse_model_config_text(text: str, source: str) -> Any:
    """A ``ModelServerConfig`` from text; ``ValueError`` naming ``source`` and the fault."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise InvalidProtobufFile(error, source) from None
    validate_model_config(config, source)
    return config


def load_model_config(path: Path) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ValueError(f"{path}: cannot read the model config file: {error.strerror}") from None
    return parse_model_config_text(text, str(path))


def validate_model_config(config: Any, source: str) -> None:
    """The checks TF Serving applies before loading anything."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError(f"{source}: custom_model_config is not supported; use model_config_list")
    names = set()
    for index, model in enumerate(config.model_config_list.config):
        where = f"{source}: model_config_list.config[{index}]"
        if not model.name:
            raise ValueError(f"{where}: field 'name' is empty")
        if model.name in names:
            raise ValueError(f"{where}: duplicate model name {model.name!r}")
        names.add(model.name)
        if not model.base_path:
            raise ValueError(f"{where} ({model.name}): field 'base_path' is empty")
        platform = model.model_platform or "tensorflow"
        if platform != "tensorflow":
            raise ValueError(f"{where} ({model.name}): model_platform {platform!r} is not supported (only 'tensorflow')")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ValueError(f"{where} ({model.name}): model_version_policy.specific lists no versions")
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ValueError(f"{where} ({model.name}): model_version_policy.latest.num_versions must be >= 0")


def single_model_config(name: str, base_path: str) -> Any:
    """The config ``--model_name``/``--model_base_path`` stand for."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    return config
