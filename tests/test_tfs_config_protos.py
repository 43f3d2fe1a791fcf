"""The TF Serving config files the lab writes and ships parse with protobuf's own text parser
against TF Serving's message definitions (serving_configs/schema/*.proto, compiled by protoc at
build time), and every export's warm-up fits every batching set the lab ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from poochlab.experiments.sweep.server_configs import (
    batching_parameters_text, models_config_text, monitoring_config_text,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_BATCHING_FILES = sorted((ROOT / "serving_configs" / "batching").glob("*.config")) + [
    ROOT / "docker" / "tfserving" / "batching.config"]
SHIPPED_MONITORING_FILES = [ROOT / "serving_configs" / "monitoring.config",
                            ROOT / "docker" / "tfserving" / "monitoring.config"]
SPECS = sorted((ROOT / "experiments").glob("*.toml"))


def parse(message_class, text: str):
    message = message_class()
    text_format.Parse(text, message)
    return message


def test_every_field_the_sweep_writes_parses_as_tf_serving_reads_it(tfs_protos):
    fields = {"max_batch_size": 32, "batch_timeout_micros": 1000, "max_enqueued_batches": 100,
              "num_batch_threads": 2, "allowed_batch_sizes": [8, 16, 32],
              "pad_variable_length_inputs": True, "enable_large_batch_splitting": True,
              "max_execution_batch_size": 16}
    text = batching_parameters_text(fields)
    assert "pad_variable_length_inputs: true" in text.splitlines()
    proto = parse(tfs_protos.batching.BatchingParameters, text)
    assert proto.max_batch_size.value == 32
    assert proto.batch_timeout_micros.value == 1000
    assert proto.max_enqueued_batches.value == 100
    assert proto.num_batch_threads.value == 2
    assert list(proto.allowed_batch_sizes) == [8, 16, 32]
    assert proto.pad_variable_length_inputs is True
    assert proto.enable_large_batch_splitting.value is True
    assert proto.max_execution_batch_size.value == 16


def test_the_old_wrapped_form_of_pad_variable_length_inputs_is_refused_by_both_parsers(tfs_protos):
    from poochlab.serving.batching import parse_batching_parameters

    text = "pad_variable_length_inputs { value: true }\n"
    with pytest.raises(text_format.ParseError):
        parse(tfs_protos.batching.BatchingParameters, text)
    with pytest.raises(ValueError, match="pad_variable_length_inputs"):
        parse_batching_parameters(text, "batching.config")


@pytest.mark.parametrize("path", SHIPPED_BATCHING_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_batching_files_parse_with_tf_servings_message(tfs_protos, path):
    parse(tfs_protos.batching.BatchingParameters, path.read_text())


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.name)
def test_batching_sets_of_shipped_specs_parse_with_tf_servings_message(tfs_protos, spec_path):
    from poochlab.experiments.sweep.spec import load_spec

    for fields in load_spec(spec_path).batching_sets.values():
        parse(tfs_protos.batching.BatchingParameters, batching_parameters_text(fields))


def test_the_labs_own_batching_schema_matches_tf_servings(tfs_protos):
    from poochlab.serving.batching.parameters import _message_class

    def fields(descriptor):
        return {f.name: (f.number, f.type, f.is_repeated, f.message_type.full_name if f.message_type else None)
                for f in descriptor.fields}

    assert fields(_message_class().DESCRIPTOR) == fields(tfs_protos.batching.BatchingParameters.DESCRIPTOR)


@pytest.mark.parametrize("text", [monitoring_config_text()] + [p.read_text() for p in SHIPPED_MONITORING_FILES],
                         ids=["sweep", "serving_configs", "docker"])
def test_monitoring_configs_parse_with_tf_servings_message(tfs_protos, text):
    config = parse(tfs_protos.monitoring.MonitoringConfig, text)
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_models_configs_parse_with_tf_servings_model_server_config(tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    from poochlab.processes.servers.docker_run import container_models_config

    texts = [models_config_text(["pooch_predictor", "pooch_predictor_2"], Path("/srv/models/small/pooch_predictor")),
             (ROOT / "docker" / "tfserving" / "models.config").read_text()]
    host = tmp_path / "models.config"
    host.write_text(texts[0])
    texts.append(container_models_config(host)[0])
    names = []
    for text in texts:
        config = parse(model_server_config_pb2.ModelServerConfig, text)
        names.append([(m.name, m.base_path) for m in config.model_config_list.config])
    assert names[1] == [("pooch_predictor", "/models/pooch_predictor")]
    assert names[2] == [("pooch_predictor", "/models/pooch_predictor"),
                        ("pooch_predictor_2", "/models/pooch_predictor")]


def shipped_batch_caps(tfs_protos) -> dict[str, int]:
    """max_batch_size of every batching set the lab ships (TF Serving's default 1000 if unset)."""
    from poochlab.experiments.sweep.spec import load_spec

    texts = {str(p.relative_to(ROOT)): p.read_text() for p in SHIPPED_BATCHING_FILES}
    for spec_path in SPECS:
        for name, fields in load_spec(spec_path).batching_sets.items():
            texts[f"{spec_path.name} [batching.{name}]"] = batching_parameters_text(fields)
    caps = {}
    for source, text in texts.items():
        proto = parse(tfs_protos.batching.BatchingParameters, text)
        caps[source] = proto.max_batch_size.value if proto.HasField("max_batch_size") else 1000
    return caps


def test_warmup_records_are_no_larger_than_any_shipped_batch_cap(tfs_protos):
    from poochlab.models.warmup_records import BATCH_SIZES, MAX_WARMUP_BATCH

    caps = shipped_batch_caps(tfs_protos)
    assert caps["serving_configs/batching/timeout1ms.config"] == 32
    assert max(BATCH_SIZES) == MAX_WARMUP_BATCH == 32
    too_small = {source: cap for source, cap in caps.items() if cap < MAX_WARMUP_BATCH}
    assert too_small == {}


@pytest.mark.parametrize("variant", ["small", "large"])
def test_every_exports_warmup_records_fit_every_shipped_batch_cap(tfs_protos, pooch_exports, variant):
    from poochlab.models.export import latest_version_dir
    from poochlab.models.warmup_records import record_rows

    rows = record_rows(latest_version_dir(pooch_exports[variant]))
    assert len(rows) == 53 and max(rows) == 32  # 48 single rows, then 2, 4, 8, 16, 32
    assert max(rows) <= min(shipped_batch_caps(tfs_protos).values())
