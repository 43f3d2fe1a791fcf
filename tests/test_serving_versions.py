"""Model versions in the model manager: policies, labels, polling, warm-up (in-process, real TF)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from poochlab.serving.status import Code, ServingError


@pytest.fixture(scope="module")
def executor():
    from poochlab.serving.model_threads import ModelThreads

    threads = ModelThreads(2)
    yield threads
    threads.shutdown()


def make_manager(executor):
    from poochlab.serving.direct_session import DirectSession
    from poochlab.serving.model_manager import ModelManager

    return ModelManager(lambda compute, name: DirectSession(compute, executor))


def base_with_versions(tmp_path: Path, half_plus_two_base: Path, versions: list[int]) -> Path:
    base = tmp_path / "half_plus_two"
    for version in versions:
        shutil.copytree(half_plus_two_base / "half_plus_two" / "1", base / str(version))
    (base / "not_a_version").mkdir()
    return base


def config_text(base: Path, extra: str = "") -> str:
    return (f"model_config_list {{ config {{ name: 'half_plus_two' base_path: '{base}' "
            f"model_platform: 'tensorflow' {extra} }} }}")


def apply(manager, base: Path, extra: str = "") -> None:
    from poochlab.serving.model_config import parse_model_config_text

    manager.apply_config(parse_model_config_text(config_text(base, extra), "test.config"))


def states(manager) -> dict[int, str]:
    return {s.version: s.state for s in manager.status("half_plus_two")}


@pytest.mark.parametrize("policy, expected", [
    ("", {3: "AVAILABLE"}),
    ("model_version_policy { latest { num_versions: 2 } }", {2: "AVAILABLE", 3: "AVAILABLE"}),
    ("model_version_policy { all {} }", {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}),
    ("model_version_policy { specific { versions: 1 versions: 3 } }", {1: "AVAILABLE", 3: "AVAILABLE"}),
])
def test_version_policies_choose_the_numeric_folders_they_name(tmp_path, half_plus_two_base, executor, policy, expected):
    manager = make_manager(executor)
    apply(manager, base_with_versions(tmp_path, half_plus_two_base, [1, 2, 3]), policy)
    assert states(manager) == expected
    assert manager.resolve("half_plus_two").version == max(expected)
    manager.close()


def test_labels_address_versions_and_must_point_at_loaded_ones(tmp_path, half_plus_two_base, executor):
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1, 2])
    apply(manager, base, "model_version_policy { all {} } version_labels { key: 'stable' value: 1 } "
                         "version_labels { key: 'canary' value: 2 }")
    assert manager.resolve("half_plus_two", label="stable").version == 1
    assert manager.resolve("half_plus_two", label="canary").version == 2
    with pytest.raises(ServingError) as error:
        apply(manager, base, "model_version_policy { all {} } version_labels { key: 'stable' value: 5 }")
    assert error.value.code == Code.FAILED_PRECONDITION and "version 5" in error.value.message
    with pytest.raises(ServingError) as error:
        manager.resolve("half_plus_two", label="beta")
    assert error.value.message == "Unrecognized servable version label: beta"
    manager.close()


def test_polling_loads_a_new_version_before_unloading_the_old(tmp_path, half_plus_two_base, executor):
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1])
    apply(manager, base)
    old = manager.resolve("half_plus_two")
    shutil.copytree(base / "1", base / "2")
    manager.poll()
    assert states(manager) == {2: "AVAILABLE", 1: "END"}
    assert manager.resolve("half_plus_two").version == 2
    # A request that resolved version 1 just before the switch still completes.
    session = manager.session(old, "serving_default")
    from poochlab.serving.inference_session import InferenceTask

    result = session.submit(InferenceTask({"x": np.array([[2.0]], np.float32)})).result(30)
    assert result.outputs["y"].tolist() == [[3.0]]
    manager.close()


def test_an_unloaded_version_releases_its_session_after_the_grace_period(tmp_path, half_plus_two_base, executor,
                                                                        monkeypatch):
    import time

    from poochlab.serving import model_manager

    monkeypatch.setattr(model_manager, "UNLOAD_GRACE_S", 0.2)
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1])
    apply(manager, base)
    signature = manager.resolve("half_plus_two").servable.signature("")
    x = {"x": np.array([[2.0]], np.float32)}
    shutil.copytree(base / "1", base / "2")
    manager.poll()
    assert signature.compute(x)["y"].tolist() == [[3.0]]  # within the grace period: still answers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            signature.compute(x)
        except ServingError as error:
            assert error.code == Code.UNAVAILABLE and "unloaded" in error.message
            break
        time.sleep(0.05)
    else:
        pytest.fail("version 1's session was never closed")
    current = manager.resolve("half_plus_two").servable.signature("")
    assert current.compute(x)["y"].tolist() == [[3.0]]
    manager.close()  # the servers have stopped: no grace period, every session closes now
    with pytest.raises(ServingError, match="unloaded"):
        current.compute(x)


def test_a_broken_version_fails_alone(tmp_path, half_plus_two_base, executor):
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1])
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    apply(manager, base, "model_version_policy { all {} }")
    status = {s.version: s for s in manager.status("half_plus_two")}
    assert status[1].state == "AVAILABLE"
    assert status[2].state == "END" and status[2].error is not None
    assert manager.resolve("half_plus_two").version == 1
    manager.close()


def test_removing_a_model_from_the_config_unloads_it(tmp_path, half_plus_two_base, executor):
    from poochlab.serving.model_config import parse_model_config_text

    manager = make_manager(executor)
    apply(manager, base_with_versions(tmp_path, half_plus_two_base, [1]))
    manager.apply_config(parse_model_config_text("model_config_list {}", "empty.config"))
    with pytest.raises(ServingError) as error:
        manager.resolve("half_plus_two")
    assert error.value.code == Code.NOT_FOUND


def write_warmup(version_dir: Path, records: list[bytes]) -> None:
    import tensorflow as tf

    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def predict_log(values: list[list[float]], input_name: str = "x") -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "half_plus_two"
    log.predict_log.request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return log.SerializeToString()


@pytest.mark.parametrize("records, available", [
    ([predict_log([[1.0]]), predict_log([[2.0], [3.0]])], True),
    ([predict_log([[1.0]], input_name="nope")], False),  # replayed: the unknown input fails the load
    ([b"\x08\xff\xff garbage"], False),  # a record that is no PredictionLog
    ([predict_log([[1.0]])] * 1001, False),  # TF Serving's limit is 1000 records
])
def test_warmup_records_are_replayed_and_bad_ones_fail_only_that_version(
        tmp_path, half_plus_two_base, executor, records, available):
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1, 2])
    write_warmup(base / "2", records)
    apply(manager, base, "model_version_policy { all {} }")
    assert states(manager) == {1: "AVAILABLE", 2: "AVAILABLE" if available else "END"}
    manager.close()


def test_a_corrupt_warmup_file_fails_the_version(tmp_path, half_plus_two_base, executor):
    manager = make_manager(executor)
    base = base_with_versions(tmp_path, half_plus_two_base, [1])
    path = base / "1" / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 40)  # TFRecord framing with a wrong CRC
    apply(manager, base)
    (status,) = manager.status("half_plus_two")
    assert status.state == "END" and status.error.code == Code.DATA_LOSS


@pytest.mark.parametrize("text, fault", [
    ("model_config_list { config { name: 'a' } }", "base_path"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }", "pytorch"),
    ("model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }", "duplicate"),
    ("model_config_list { config { nam: 'a' } }", "nam"),
])
def test_bad_model_configs_name_the_file_and_the_fault(text, fault):
    from poochlab.serving.model_config import parse_model_config_text

    with pytest.raises(ValueError) as error:
        parse_model_config_text(text, "models.config")
    assert "models.config" in str(error.value) and fault in str(error.value)


def test_a_task_whose_deadline_passed_in_the_queue_is_deadline_exceeded(executor):
    import time

    from poochlab.serving.direct_session import DirectSession
    from poochlab.serving.inference_session import InferenceTask

    ran = []
    session = DirectSession(lambda inputs: ran.append(1) or {"y": inputs["x"]}, executor)
    late = InferenceTask({"x": np.zeros((1, 1), np.float32)}, deadline=time.monotonic() - 0.001)
    with pytest.raises(ServingError) as error:
        session.submit(late).result(10)
    assert error.value.code == Code.DEADLINE_EXCEEDED and ran == []
    on_time = InferenceTask({"x": np.ones((1, 1), np.float32)}, deadline=time.monotonic() + 60)
    assert session.submit(on_time).result(10).outputs["y"].tolist() == [[1.0]]


def test_a_loaded_version_is_out_of_the_cyclic_collectors_reach(tmp_path, half_plus_two_base, executor):
    # A full collection that walks TensorFlow's objects paused the server for hundreds of ms under
    # load; what a load creates is frozen (gc.freeze), so later collections never walk it again.
    import gc

    gc.unfreeze()
    manager = make_manager(executor)
    try:
        apply(manager, base_with_versions(tmp_path, half_plus_two_base, [1]))
        assert states(manager) == {1: "AVAILABLE"}
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # TensorFlow, the SavedModel and its graph (and this test process)
        # What a collection would walk now is only what was made after the load, a small fraction:
        assert len(gc.get_objects()) < frozen / 10
    finally:
        manager.close()
        gc.unfreeze()
