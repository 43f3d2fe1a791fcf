"""GetModelStatus and GetModelMetadata answers as TF Serving's protos (REST prints them as JSON)."""

from __future__ import annotations

from typing import Any

from poochlab.serving.model_manager import ModelManager, VersionState
from poochlab.serving.status import Code

_STATE_ENUM = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def model_status_response(manager: ModelManager, name: str, version: int | None, label: str | None) -> Any:
    """A ``GetModelStatusResponse``; raises ServingError for unknown models/versions/labels."""
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for state in manager.status(name, version, label):
        entry = response.model_version_status.add()
        entry.version = state.version
        entry.state = _STATE_ENUM[state.state]
        if state.error is not None:
            entry.status.error_code = state.error.code.value
            entry.status.error_message = state.error.message
        else:
            entry.status.error_code = Code.OK.value
    return response


def model_metadata_response(state: VersionState) -> Any:
    """A ``GetModelMetadataResponse`` with the ``signature_def`` metadata packed in an ``Any``."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = state.model
    response.model_spec.version.value = state.version
    assert state.servable is not None
    response.metadata["signature_def"].Pack(state.servable.signature_def_map_proto())
    return response
