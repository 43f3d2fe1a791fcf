"""The per-request fast paths: the session call of a signature, and a sole REST request on the loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from poochlab.serving.status import Code, ServingError


@pytest.fixture(scope="module")
def half_plus_two(half_plus_two_base: Path):
    from poochlab.serving.servable import Servable

    return Servable("half_plus_two", 1, half_plus_two_base / "half_plus_two" / "1")


def _eager_call(version_dir: Path, signature_name: str, inputs: dict) -> dict:
    """The reference answer: TensorFlow 2's own loader and the public signature call."""
    import tensorflow as tf

    function = tf.saved_model.load(str(version_dir)).signatures[signature_name]
    return {name: tensor.numpy() for name, tensor in function(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def _examples(*values: float) -> np.ndarray:
    import tensorflow as tf

    serialized = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[v]))})).SerializeToString() for v in values]
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


@pytest.mark.parametrize("signature_name", ["serving_default", "classify_x_to_y", "regress_x_to_y"])
def test_the_session_call_answers_like_tensorflow_2_s_own_loader(half_plus_two, signature_name: str):
    signature = half_plus_two.signature(signature_name)
    (name,) = signature.inputs
    value = (np.array([[1.0], [2.5], [-4.0]], np.float32) if signature_name == "serving_default"
             else _examples(1.0, 2.5, -4.0))
    ours, reference = signature.compute({name: value}), _eager_call(half_plus_two.path, signature_name, {name: value})
    assert set(ours) == set(reference) == set(signature.outputs)
    for key, array in reference.items():
        np.testing.assert_array_equal(ours[key], array)
        assert ours[key].dtype == array.dtype


def test_the_session_call_answers_like_tensorflow_2_s_own_loader_for_the_pooch_predictor(pooch_exports):
    """String inputs, a lookup of hashtags, variables and tables restored by the session: the same likes."""
    from poochlab.models.export import latest_version_dir
    from poochlab.serving.servable import Servable

    version_dir = latest_version_dir(pooch_exports["small"])
    signature = Servable("pooch_predictor", int(version_dir.name), version_dir).signature("serving_default")
    inputs = {"hashtags": np.array([b"#corgi #adorable", b"", b"#pug"], dtype=object),
              "country": np.array([b"US", b"FR", b"??"], dtype=object),
              "followers": np.array([120, 0, 10**7], dtype=np.int64)}
    ours, reference = signature.compute(inputs), _eager_call(version_dir, "serving_default", inputs)
    assert set(ours) == set(reference)
    for key, array in reference.items():
        np.testing.assert_array_equal(ours[key], array)
    # The answers stay valid after later calls reuse TensorFlow's buffers.
    kept = {key: array.copy() for key, array in ours.items()}
    for _ in range(3):
        signature.compute({k: v[::-1].copy() for k, v in inputs.items()})
    for key, array in kept.items():
        np.testing.assert_array_equal(ours[key], array)


def test_the_session_call_refuses_a_numeric_dtype_naming_the_input(pooch_exports):
    """A float or int32 array for an int64 input: refused with the input's name, not a graph node's."""
    from poochlab.models.export import latest_version_dir
    from poochlab.serving.servable import Servable

    version_dir = latest_version_dir(pooch_exports["small"])
    signature = Servable("pooch_predictor", int(version_dir.name), version_dir).signature("serving_default")
    strings = {"hashtags": np.array([b"#pug"], dtype=object), "country": np.array([b"US"], dtype=object)}
    for followers in (np.array([2**40], dtype=np.float64), np.array([7], dtype=np.int32)):
        with pytest.raises(ServingError) as error:
            signature.compute({**strings, "followers": followers})
        assert error.value.code == Code.INVALID_ARGUMENT and "followers" in error.value.message


def test_the_session_call_answers_read_only_arrays(half_plus_two):
    """Its answers may share TensorFlow's buffers: writing into one must fail, not reach the model."""
    signature = half_plus_two.signature("serving_default")
    (name,) = signature.inputs
    x = np.array([[1.0]], np.float32)
    answer = signature.compute({name: x})["y"]
    with pytest.raises(ValueError):
        answer[0, 0] = 123.0
    assert signature.compute({name: x})["y"][0, 0] == pytest.approx(2.5)


def test_the_session_call_refuses_a_wrong_dtype_as_the_request_s_error(half_plus_two):
    signature = half_plus_two.signature("serving_default")
    with pytest.raises(ServingError) as error:
        signature.compute({name: np.array([["a"]], dtype=object) for name in signature.inputs})
    assert error.value.code == Code.INVALID_ARGUMENT


def test_a_closed_servable_answers_an_error_instead_of_running(half_plus_two_base: Path):
    """Unloading closes the version's session; a request that still holds it gets UNAVAILABLE."""
    from poochlab.serving.servable import Servable

    servable = Servable("half_plus_two", 1, half_plus_two_base / "half_plus_two" / "1")
    signature = servable.signature("")
    x = {name: np.array([[1.0]], np.float32) for name in signature.inputs}
    assert signature.compute(x)["y"][0, 0] == pytest.approx(2.5)
    servable.close()
    with pytest.raises(ServingError) as error:
        signature.compute(x)
    assert error.value.code == Code.UNAVAILABLE and "unloaded" in error.value.message


@pytest.fixture(scope="module")
def slow_servable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SavedModel whose signature counts to ``steps`` in a graph loop: a run as long as asked
    for, and a scalar (rank-0) output."""
    import tensorflow as tf

    class Counter(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.int64, name="steps")])
        def count(self, steps):
            _, total = tf.while_loop(lambda i, total: i < steps, lambda i, total: (i + 1, total + 1.0),
                                     [tf.constant(0, tf.int64), tf.constant(0.0)])
            return {"total": total}

    path = tmp_path_factory.mktemp("counter") / "1"
    module = Counter()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.count})
    return path


def test_a_scalar_output_is_answered_as_a_read_only_rank_0_array(slow_servable: Path):
    from poochlab.serving.servable import Servable

    servable = Servable("counter", 1, slow_servable)
    total = servable.signature("").compute({"steps": np.array(5, np.int64)})["total"]
    assert total.shape == () and float(total) == 5.0 and not total.flags.writeable
    servable.close()


def test_closing_waits_for_the_run_in_progress_and_refuses_new_ones(slow_servable: Path, monkeypatch):
    """TF Serving keeps a servable until its last handle goes: unloading must not cancel a run."""
    from poochlab.serving import servable as servable_module
    from poochlab.serving.servable import Servable

    # Fault injection: the session run waits for the test's word, so the close provably comes
    # while it is in progress (no run length to guess).
    started, release = threading.Event(), threading.Event()
    real_session_run = servable_module._session_run

    def gated_session_run(session, signature_def):
        run = real_session_run(session, signature_def)

        def gated(*arrays):
            started.set()
            assert release.wait(60)
            return run(*arrays)

        return gated

    monkeypatch.setattr(servable_module, "_session_run", gated_session_run)
    servable = Servable("counter", 1, slow_servable)
    signature = servable.signature("")
    answers: list = []
    running = threading.Thread(target=lambda: answers.append(signature.compute({"steps": np.array(20_000, np.int64)})))
    running.start()
    assert started.wait(60)
    assert servable._running == 1
    servable.close()
    with pytest.raises(ServingError) as refused:
        signature.compute({"steps": np.array(1, np.int64)})
    assert refused.value.code == Code.UNAVAILABLE
    release.set()
    running.join(60)
    assert len(answers) == 1 and float(answers[0]["total"]) == 20_000  # not CANCELLED by the close


def test_a_signature_the_session_cannot_run_fails_its_requests_not_the_version(tmp_path: Path,
                                                                              half_plus_two_base: Path):
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    from poochlab.serving.servable import Servable

    version = tmp_path / "1"
    shutil.copytree(half_plus_two_base / "half_plus_two" / "1", version)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((version / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0]
    broken = graph.signature_def["broken"]
    broken.CopyFrom(graph.signature_def["serving_default"])
    broken.outputs["y"].name = "no_such_tensor:0"
    (version / "saved_model.pb").write_bytes(proto.SerializeToString())

    servable = Servable("half_plus_two", 1, version)
    x = np.array([[1.0]], np.float32)
    assert servable.signature("").compute({"x": x})["y"][0, 0] == pytest.approx(2.5)
    with pytest.raises(ServingError) as error:
        servable.signature("broken").compute({"x": x})
    assert error.value.code == Code.INVALID_ARGUMENT and "'broken'" in error.value.message
    servable.close()


def _manager_watching_threads(threads, ran_on: list[str]):
    from poochlab.serving.direct_session import DirectSession
    from poochlab.serving.model_manager import ModelManager

    def factory(compute, name):
        def watched(inputs):
            ran_on.append(threading.current_thread().name)
            return compute(inputs)

        return DirectSession(watched, threads)

    return ModelManager(factory)


def test_a_sole_request_on_a_quick_model_runs_on_the_loop_and_others_on_model_threads(half_plus_two_base):
    from poochlab.serving.inference import run_signature
    from poochlab.serving.model_config import single_model_config
    from poochlab.serving.model_threads import ModelThreads

    threads = ModelThreads(2, name="model")
    ran_on: list[str] = []
    manager = _manager_watching_threads(threads, ran_on)
    try:
        manager.apply_config(single_model_config("half_plus_two", str(half_plus_two_base / "half_plus_two")))
        state = manager.resolve("half_plus_two")
        signature = state.servable.signature("")
        inputs = {name: np.array([[1.0]], np.float32) for name in signature.inputs}

        session = manager.session(state, signature.name)

        async def call(alone: bool) -> float:
            result = await run_signature(manager, state, signature, inputs, None, alone=alone)
            return float(next(iter(result.outputs.values())).reshape(-1)[0])

        async def calls() -> list[float]:
            # Never run yet: its speed is unknown, so even a sole request goes to a model thread.
            answers = [await call(alone=True)]
            for _ in range(200):  # a cold first run may be slow: until the session has seen quick runs
                if session.runs_quickly:
                    break
                await call(alone=False)
            answers.append(await call(alone=True))
            answers.append(await call(alone=False))
            return answers

        answers = asyncio.run(calls())
    finally:
        manager.close()
        threads.shutdown()
    assert answers == [2.5, 2.5, 2.5]
    assert ran_on[0].startswith("model_")
    assert ran_on[-2] == threading.current_thread().name  # asyncio.run's loop runs on this thread
    assert ran_on[-1].startswith("model_")


def test_the_gauge_counts_requests_being_answered_over_all_connections():
    from poochlab.serving.http_server import RequestGauge, start_http_server
    from poochlab.serving.rest_api import Response

    gauge = RequestGauge()

    async def scenario() -> list[int]:
        release, both_called, called = asyncio.Event(), asyncio.Event(), []

        async def handler(method, path, headers, body):
            called.append(path)  # the gauge counts a request before its handler is called
            if len(called) == 2:
                both_called.set()
            await release.wait()
            return Response(200, b"{}")

        server = await start_http_server(handler, "127.0.0.1", 0, 1024, "too large", gauge)
        port = server.sockets[0].getsockname()[1]
        request = b"GET /v1/models/x HTTP/1.1\r\nHost: a\r\n\r\n"
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, writer in streams:
            writer.write(request)
            await writer.drain()
        seen = []
        await asyncio.wait_for(both_called.wait(), 60)  # until both requests are being answered
        seen.append(gauge.in_flight)
        release.set()
        for reader, _ in streams:
            assert (await reader.readuntil(b"{}")).startswith(b"HTTP/1.1 200")
        seen.append(gauge.in_flight)
        for _, writer in streams:
            writer.close()
        server.close()
        await server.wait_closed()
        return seen

    assert asyncio.run(scenario()) == [2, 0]


@pytest.mark.parametrize("field, dtype, values, shape", [
    ("string_val", 7, [b"a", b"bc", b"", b"\xff"], [2, 2]),
    ("int64_val", 9, [1, -2, 3], [1, 3]),
    ("float_val", 1, [0.5, 2.25], [2, 1]),
    ("bool_val", 10, [True, False], [2]),
    ("string_val", 7, [], [0]),
])
def test_request_tensors_in_typed_fields_read_like_tensorflow_reads_them(field, dtype, values, shape):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from poochlab.serving.servable import TensorSpec
    from poochlab.serving.tensor_proto import proto_to_array

    # Typed repeated fields, one value per element: what TF Serving's clients send.
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(values)
    got = proto_to_array(proto, TensorSpec("x", dtype, None))
    want = tf.make_ndarray(proto)
    assert got.shape == want.shape == tuple(shape) and got.dtype.kind == want.dtype.kind
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1])
def test_float32_formatting_reads_back_as_the_same_float32(seed):
    from poochlab.serving.json_format import format_float

    rng = np.random.default_rng(seed)
    values = np.concatenate([
        (rng.standard_normal(3000) * 10.0 ** rng.integers(-40, 39, 3000)).astype(np.float32),
        np.array([0.0, -0.0, 1e-45, 3.4028235e38, -3.4028235e38], np.float32),
    ])
    for value in values:
        text = format_float(float(value), True)
        assert np.float32(text) == value, (value, text)  # the shortest text TF Serving's rule allows
        short = "%g" % value
        if np.float32(short) == value:  # 6 digits suffice: TF Serving writes exactly those
            assert text == (short if "." in short or "e" in short else short + ".0")
        else:
            assert text == "%.9g" % value or text == "%.9g" % value + ".0"


@pytest.mark.parametrize("inter_op, want", [(0, -1), (3, 3)])
def test_sessions_run_on_the_calling_thread_unless_an_inter_op_pool_is_asked_for(monkeypatch, inter_op, want):
    """--tensorflow_inter_op_parallelism=0 runs each graph on the caller (ConfigProto's -1); N>0 a pool."""
    import tensorflow as tf

    from poochlab.serving import servable

    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: inter_op)
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 2)
    config = servable._session_config()
    assert config.inter_op_parallelism_threads == want
    assert config.intra_op_parallelism_threads == 2
