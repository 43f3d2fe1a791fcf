"""TF Serving's gRPC services (``tensorflow-serving-api`` protos) on grpc's thread-pool server.

The synchronous server was measured against grpc.aio (``poochlab bench server``): its echo
costs less CPU per call, and its handler threads may block, so without batching the model runs
on the RPC's own thread instead of being handed to another pool. ``--grpc_max_threads`` is the
concurrent-RPC limit (RESOURCE_EXHAUSTED beyond it, as in TF Serving; see ``grpc_limit``).

``PredictionService``: Predict, Classify, Regress, MultiInference, GetModelMetadata;
``ModelService``: GetModelStatus, HandleReloadConfigRequest. Every inference answer carries
trailing metadata ``server-timing: queue;dur=<ms>, compute;dur=<ms>`` like the REST header.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import grpc
import numpy as np

from poochlab.serving.inference import (
    classification_results, examples_input, examples_signature, regression_results,
    run_signature_blocking as run_signature,
)
from poochlab.serving.admission import Admission
from poochlab.serving.fault_injection import FaultInjector
from poochlab.serving.input_names import check_input_names
from poochlab.serving.metrics import ServerMetrics
from poochlab.serving.model_manager import ModelManager, VersionState
from poochlab.serving.rest_api import server_timing
from poochlab.wire import SERVER_TIMING_METADATA_KEY
from poochlab.serving.servable import CLASSIFY_METHOD, REGRESS_METHOD
from poochlab.serving.status import Code, ServingError
from poochlab.serving.tensor_proto import array_to_proto, proto_to_array, serialized_examples

SERVER_TIMING_KEY = SERVER_TIMING_METADATA_KEY


def _resolve(manager: ModelManager, spec: Any) -> VersionState:
    if not spec.name:
        raise ServingError(Code.INVALID_ARGUMENT, "Missing ModelSpec name")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return manager.resolve(spec.name, version=spec.version.value)
    if choice == "version_label":
        return manager.resolve(spec.name, label=spec.version_label)
    return manager.resolve(spec.name)


def _echo_spec(target: Any, state: VersionState, signature_name: str) -> None:
    target.name = state.model
    target.version.value = state.version
    target.signature_name = signature_name


def _output_aliases(output_filter: Any, outputs: dict[str, Any]) -> list[str]:
    """The outputs a Predict answers: its ``output_filter`` (checked before the model runs, as
    TF Serving does: unknown or repeated aliases are INVALID_ARGUMENT), or all of them."""
    wanted: list[str] = []
    for alias in output_filter:
        if alias not in outputs:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"output tensor alias not found in signature: {alias} "
                               f"Outputs expected to be in the set {{{','.join(sorted(outputs))}}}.")
        if alias in wanted:
            raise ServingError(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
        wanted.append(alias)
    return wanted or list(outputs)


# grpc reports a call without a deadline as one about 292 years away (its "infinite future"),
# which no timed wait can take; anything beyond this is treated as no deadline at all.
_NO_DEADLINE_S = 365 * 24 * 3600.0


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


class _Calls:
    """Runs one RPC: status mapping, metrics and the server-timing trailer in one place."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def run(self, api: str, model: str, context: grpc.ServicerContext,
                  body: Callable[[list[float]], Any]) -> Any:
        started = time.monotonic()
        timing: list[float] = []  # queue_us, compute_us once the model ran
        try:
            response = body(timing)
        except ServingError as error:
            self.metrics.record_request(model, api, "GRPC", error.code.name, (time.monotonic() - started) * 1e6,
                                        timing[1] if timing else None)
            context.abort(grpc.StatusCode[error.code.name], error.message)
        if timing:
            context.set_trailing_metadata(((SERVER_TIMING_KEY, server_timing(timing[0], timing[1])),))
        self.metrics.record_request(model, api, "GRPC", "OK", (time.monotonic() - started) * 1e6,
                                    timing[1] if timing else None)
        return response


class PredictionServicer:
    def __init__(self, manager: ModelManager, metrics: ServerMetrics, check_method_name: bool = False) -> None:
        self.manager = manager
        self.check_method_name = check_method_name  # --enable_signature_method_name_check
        self.calls = _Calls(metrics)
        self.fault: FaultInjector | None = None  # --lab_fault_* (set through LabFaults)
        self.admission = Admission()  # --lab_max_queue (main.py shares one with REST)

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import predict_pb2

        def body(timing: list[float]) -> Any:
            state = _resolve(self.manager, request.model_spec)
            assert state.servable is not None
            self.admission.refuse_if_full()  # before the tensors are converted: refusing stays cheap
            signature = state.servable.signature(request.model_spec.signature_name)
            check_input_names(signature.inputs, set(request.inputs))
            inputs = {name: proto_to_array(proto, signature.inputs[name]) for name, proto in request.inputs.items()}
            wanted = _output_aliases(request.output_filter, signature.outputs)
            with self.admission.admit():  # --lab_max_queue: shed at once when full
                if self.fault is not None:
                    self.fault.before_model_blocking()
                result = run_signature(self.manager, state, signature, inputs, _deadline(context))
            timing.extend((result.queue_us, result.compute_us))
            response = predict_pb2.PredictResponse()
            for name in wanted:
                array_to_proto(result.outputs[name], response.outputs[name])
            _echo_spec(response.model_spec, state, signature.name)
            return response

        return self.calls.run("Predict", request.model_spec.name, context, body)

    def _examples(self, request: Any, method: str, timing: list[float],
                        context: grpc.ServicerContext) -> tuple[VersionState, str, dict[str, np.ndarray], int]:
        state = _resolve(self.manager, request.model_spec)
        assert state.servable is not None
        signature = examples_signature(state.servable, request.model_spec.signature_name, method,
                                       self.check_method_name)
        examples = serialized_examples(request.input)
        with self.admission.admit():  # --lab_max_queue: shed at once when full
            if self.fault is not None:
                self.fault.before_model_blocking()
            result = run_signature(self.manager, state, signature, examples_input(signature, examples),
                                   _deadline(context))
        timing.extend((result.queue_us, result.compute_us))
        return state, signature.name, result.outputs, len(examples)

    def _classify(self, request: Any, timing: list[float], context: grpc.ServicerContext,
                        response: Any) -> Any:
        state, signature_name, outputs, count = self._examples(request, CLASSIFY_METHOD, timing, context)
        for row in classification_results(outputs, count):
            classifications = response.result.classifications.add()
            for label, score in row:
                entry = classifications.classes.add()
                entry.label = label
                entry.score = float(score)
        _echo_spec(response.model_spec, state, signature_name)
        return response

    def _regress(self, request: Any, timing: list[float], context: grpc.ServicerContext,
                       response: Any) -> Any:
        state, signature_name, outputs, count = self._examples(request, REGRESS_METHOD, timing, context)
        for value in regression_results(outputs, count):
            response.result.regressions.add().value = float(value)
        _echo_spec(response.model_spec, state, signature_name)
        return response

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import classification_pb2

        return self.calls.run(
            "Classify", request.model_spec.name, context,
            lambda timing: self._classify(request, timing, context, classification_pb2.ClassificationResponse()))

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import regression_pb2

        return self.calls.run(
            "Regress", request.model_spec.name, context,
            lambda timing: self._regress(request, timing, context, regression_pb2.RegressionResponse()))

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

        def body(timing: list[float]) -> Any:
            if not request.tasks:
                raise ServingError(Code.INVALID_ARGUMENT, "MultiInferenceRequest must contain at least one task")
            names = {task.model_spec.name for task in request.tasks}
            if len(names) != 1:
                raise ServingError(Code.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name")
            response = inference_pb2.MultiInferenceResponse()
            queue_us = compute_us = 0.0
            for task in request.tasks:
                sub_request = _TaskRequest(task.model_spec, request.input)
                task_timing: list[float] = []
                if task.method_name == CLASSIFY_METHOD:
                    answer = self._classify(sub_request, task_timing, context, classification_pb2.ClassificationResponse())
                    result = response.results.add()
                    result.classification_result.CopyFrom(answer.result)
                elif task.method_name == REGRESS_METHOD:
                    answer = self._regress(sub_request, task_timing, context, regression_pb2.RegressionResponse())
                    result = response.results.add()
                    result.regression_result.CopyFrom(answer.result)
                else:
                    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
                result.model_spec.CopyFrom(answer.model_spec)
                queue_us += task_timing[0]
                compute_us += task_timing[1]
            timing.extend((queue_us, compute_us))
            return response

        model = request.tasks[0].model_spec.name if request.tasks else ""
        return self.calls.run("MultiInference", model, context, body)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        from poochlab.serving.model_protos import model_metadata_response

        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   "Metadata field signature_def is the only supported field; request lists: "
                                   + ", ".join(request.metadata_field))
            return model_metadata_response(_resolve(self.manager, request.model_spec))
        except ServingError as error:
            context.abort(grpc.StatusCode[error.code.name], error.message)


class _TaskRequest:
    """A MultiInference task seen as a Classify/Regress request."""

    def __init__(self, model_spec: Any, input_proto: Any) -> None:
        self.model_spec = model_spec
        self.input = input_proto


class ModelServicer:
    def __init__(self, manager: ModelManager, reload_config: Callable[[Any], None]) -> None:
        self.manager = manager
        self.reload_config = reload_config

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        from poochlab.serving.model_protos import model_status_response

        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        try:
            return model_status_response(
                self.manager, spec.name,
                spec.version.value if choice == "version" else None,
                spec.version_label if choice == "version_label" else None)
        except ServingError as error:
            context.abort(grpc.StatusCode[error.code.name], error.message)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        from tensorflow_serving.apis import model_management_pb2

        from poochlab.serving.model_config import validate_model_config

        # Like TF Serving, a failed reload is both the RPC's status and the answer's status.
        try:
            try:
                validate_model_config(request.config, "ReloadConfigRequest.config")
            except ValueError as error:
                raise ServingError(Code.INVALID_ARGUMENT, str(error)) from None
            self.reload_config(request.config)  # blocks this RPC's thread only
        except ServingError as error:
            context.abort(grpc.StatusCode[error.code.name], error.message)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = Code.OK.value
        return response


def add_services(server: grpc.Server, manager: ModelManager, metrics: ServerMetrics,
                 reload_config: Callable[[Any], None], check_method_name: bool = False) -> PredictionServicer:
    """Add both services; returns the PredictionServicer (faults are set on it)."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    prediction = PredictionServicer(manager, metrics, check_method_name)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, reload_config), server)
    return prediction
