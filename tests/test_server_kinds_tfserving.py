"""Kind "tfserving": TF Serving's binary with the lab's flags and config files.

The real binary cannot be installed here. The lab's own `tensorflow_model_server` accepts the
same flags, so it stands in for one end-to-end start, explicitly allowed: that proves the flags
and files the launcher generates are accepted and served. Everywhere else it must be refused.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

import pytest

from fixtures.lab_server import write_models_config
from poochlab.processes.servers.identify import NotTFServingError, identify_model_server, require_tfserving
from poochlab.processes.servers.tfserving import launch_tfserving
from poochlab.processes.servers.launcher import ServerSpec, launch, tf_serving_flags

pytestmark = pytest.mark.e2e  # starts servers, Locust workers or sweeps

LAB_ENTRY_POINT = str(Path(sys.executable).parent / "tensorflow_model_server")


def test_lab_entry_point_is_identified_as_not_tf_serving() -> None:
    identity = identify_model_server(LAB_ENTRY_POINT)
    assert identity.path == str(Path(LAB_ENTRY_POINT).resolve())
    assert not identity.native and not identity.is_tfserving
    assert "poochlab-lab-server" in identity.version


def test_lab_entry_point_is_refused_as_tf_serving() -> None:
    with pytest.raises(NotTFServingError, match="is not TensorFlow Serving|a script"):
        require_tfserving(LAB_ENTRY_POINT)


def test_a_native_binary_without_tf_servings_banner_is_refused_even_as_stand_in_candidate() -> None:
    identity = identify_model_server("/bin/true")
    assert identity.native and not identity.is_tfserving
    with pytest.raises(NotTFServingError, match="a native binary"):
        require_tfserving("/bin/true")


def test_sweep_kind_tfserving_never_runs_the_lab_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the lab's entry point on PATH: the launcher must refuse, not start it.
    monkeypatch.setenv("PATH", str(Path(LAB_ENTRY_POINT).parent))
    spec = ServerSpec(kind="tfserving", model_name="m", model_base_path=tmp_path)
    with pytest.raises(NotTFServingError, match="no TensorFlow Serving binary"):
        launch(spec)


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="no such TF Serving binary"):
        require_tfserving("/nonexistent/tensorflow_model_server")


def test_generated_flags_and_files_are_accepted_by_the_stand_in(tmp_path: Path, half_plus_two_base: Path) -> None:
    config = write_models_config(tmp_path / "models.config", {"half_plus_two": half_plus_two_base / "half_plus_two"})
    batching = tmp_path / "batching_parameters.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\n")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    spec = ServerSpec(kind="tfserving", model_config_file=config, batching_parameters_file=batching,
                      monitoring_config_file=monitoring, rest_api_num_threads=2, grpc_max_threads=4,
                      tensorflow_intra_op_parallelism=1, tensorflow_inter_op_parallelism=1,
                      file_system_poll_wait_seconds=0, log_file=tmp_path / "server.log")

    with launch_tfserving(spec, binary=LAB_ENTRY_POINT, allow_lab_standin=True) as server:
        server.wait_until_available(["half_plus_two"], timeout_s=120)
        assert server.command == [str(Path(LAB_ENTRY_POINT).resolve()),
                                  *tf_serving_flags(spec, server.rest_port, server.grpc_port)]
        assert server.binary["kind"] == "tfserving" and server.binary["is_tfserving"] is False
        request = urllib.request.Request(f"{server.rest_url}/v1/models/half_plus_two:predict",
                                         data=json.dumps({"instances": [[1.0], [2.0]]}).encode())
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.loads(answer.read()) == {"predictions": [[2.5], [3.0]]}
        with urllib.request.urlopen(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=30) as answer:
            assert ":tensorflow:serving:request_count" in answer.read().decode()
    assert server.process.poll() is not None


def test_binary_named_by_environment_is_still_identified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pointing the lab at a binary does not make it TF Serving: the stand-in stays refused.
    monkeypatch.setenv("POOCHLAB_TFSERVING_BINARY", LAB_ENTRY_POINT)
    with pytest.raises(NotTFServingError, match=re.escape(str(Path(LAB_ENTRY_POINT).resolve()))):
        launch(ServerSpec(kind="tfserving", model_name="m", model_base_path=tmp_path))
