"""TF Serving's text formats the server writes and reads, checked without a server."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from poochlab.serving.json_format import error_body, format_float, write_json
from poochlab.processes.servers.launcher import ServerSpec, server_command, tf_serving_flags
from poochlab.serving.metrics import ServerMetrics, parse_monitoring_config


@pytest.mark.parametrize("value, float32, text", [
    (3.0, True, "3.0"),
    (0.2, False, "0.2"),
    (9000000.0, False, "9e+06"),
    (float(np.float32(123.456789)), True, "123.456787"),  # %g loses it; %.9g is exact for float32
    (0.1, False, "0.1"),
    (1 / 3, False, "0.33333333333333331"),  # float64 needs %.17g
    (math.nan, True, "NaN"),
    (-math.inf, False, "-Infinity"),
])
def test_floats_print_like_tf_serving(value, float32, text):
    assert format_float(value, float32) == text


def test_pretty_printing_keeps_arrays_on_one_line_and_names_outputs_per_row():
    assert write_json({"predictions": np.array([2.5, 3.0], np.float32)}) == \
        b'{\n    "predictions": [2.5, 3.0\n    ]\n}'
    rows = write_json({"predictions": [{"a": np.float32(1.5), "b": "x"}]}).decode()
    import json

    assert json.loads(rows) == {"predictions": [{"a": 1.5, "b": "x"}]}


def test_error_body_escapes_the_message():
    assert error_body('bad "x"') == b'{ "error": "bad \\"x\\"" }'


def test_monitoring_config_in_tf_serving_text_syntax():
    assert parse_monitoring_config('prometheus_config { enable: true, path: "/m/p" }', "m.config") == "/m/p"
    assert parse_monitoring_config("prometheus_config { enable: true }", "m.config") == "/monitoring/prometheus/metrics"
    assert parse_monitoring_config("prometheus_config { enable: false }", "m.config") is None
    with pytest.raises(ValueError, match="m.config"):
        parse_monitoring_config("prometheus_config { enabled: true }", "m.config")


def test_histograms_are_cumulative_and_counters_keep_their_name():
    metrics = ServerMetrics()
    for latency in (5, 50, 5e9):
        metrics.record_request("m", "Predict", "REST", "OK", latency, None)
    text = metrics.exposition()
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 3' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",le="10"} 1' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="REST",le="+Inf"} 3' in text
    assert ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="REST"} 3' in text


def test_a_spec_becomes_tf_serving_flags_and_the_lab_command():
    spec = ServerSpec(model_config_file=Path("/c/models.config"), batching_parameters_file=Path("/c/b.config"),
                      monitoring_config_file=Path("/c/m.config"), rest_api_num_threads=4, host="0.0.0.0",
                      extra_flags=("--enable_model_warmup=false",))
    flags = tf_serving_flags(spec, rest_port=8501, grpc_port=8500)
    assert flags == ["--port=8500", "--rest_api_port=8501", "--model_config_file=/c/models.config",
                     "--enable_batching=true", "--batching_parameters_file=/c/b.config",
                     "--monitoring_config_file=/c/m.config", "--rest_api_num_threads=4",
                     "--enable_model_warmup=false"]
    command = server_command(spec, 8501, 8500)
    assert command[1:3] == ["-m", "poochlab.serving"] and command[-1] == "--lab_bind_address=0.0.0.0"
    with pytest.raises(ValueError, match="tfserving"):
        server_command(ServerSpec(kind="tfserving", model_config_file=Path("/c")), 1, 2)
