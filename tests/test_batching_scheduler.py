"""The shared batch scheduler with fake compute functions: batch formation, order, limits.

Determinism without clocks: a "gated" compute holds the only batch thread inside the first
batch, so every task submitted meanwhile is queued before any decision is made; releasing the
gate then shows exactly how the queue cut its batches.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest

from poochlab.serving.batching import BatchingParameters, SharedBatchScheduler
from poochlab.serving.inference_session import InferenceTask
from poochlab.serving.status import Code, ServingError

pytestmark = pytest.mark.timeout(60)

HOUR_US = 3_600_000_000  # a batch timeout no test waits for


class GatedCompute:
    """Doubles ``x``; records every batch's inputs; holds the first batch until released."""

    def __init__(self, hold_first: bool = True) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, inputs):
        self.batches.append({name: np.array(value, copy=True) for name, value in inputs.items()})
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(30), "test never released the gate"
        return {"y": inputs["x"] * 2}

    def sizes(self) -> list[int]:
        return [len(batch["x"]) for batch in self.batches]


class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[tuple[str, int, int, int]] = []
        self.queued: list[tuple[str, float]] = []

    def on_batch(self, queue_name, input_batch_size, processed_batch_size, padding_size):
        self.batches.append((queue_name, input_batch_size, processed_batch_size, padding_size))

    def on_task_queued(self, queue_name, queue_us):
        self.queued.append((queue_name, queue_us))


def rows(*values: float, width: int = 2) -> InferenceTask:
    return InferenceTask({"x": np.array([[v] * width for v in values], dtype=np.float32)})


def error_of(future: Future) -> ServingError:
    error = future.exception(timeout=30)
    assert isinstance(error, ServingError), error
    return error


@pytest.fixture
def make_scheduler():
    schedulers: list[SharedBatchScheduler] = []

    def make(observer=None, **fields) -> SharedBatchScheduler:
        fields.setdefault("num_batch_threads", 1)
        scheduler = SharedBatchScheduler(BatchingParameters(**fields), observer)
        schedulers.append(scheduler)
        return scheduler

    yield make
    for scheduler in schedulers:
        scheduler.close()


def hold_thread(queue, compute: GatedCompute) -> Future:
    """Occupy the batch thread with a first task and wait until it is inside compute."""
    first = queue.submit(rows(-1))
    assert compute.entered.wait(30)
    return first


def test_batch_closes_when_it_reaches_max_batch_size(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=4, batch_timeout_micros=0).add_queue(compute, "m")
    first = hold_thread(queue, compute)
    futures = [queue.submit(rows(i)) for i in range(10)]
    compute.release.set()
    for i, future in enumerate(futures):
        np.testing.assert_array_equal(future.result(30).outputs["y"], [[2 * i, 2 * i]])
    first.result(30)
    assert compute.sizes() == [1, 4, 4, 2]


def test_multi_row_task_that_does_not_fit_starts_a_new_batch(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=4).add_queue(compute, "m")
    hold_thread(queue, compute)
    futures = [queue.submit(rows(1, 2, 3)), queue.submit(rows(4, 5)), queue.submit(rows(6, 7))]
    compute.release.set()
    for future in futures:
        future.result(30)
    assert compute.sizes() == [1, 3, 4]


def test_open_batch_waits_for_its_timeout_then_runs_alone(make_scheduler):
    compute = GatedCompute(hold_first=False)
    timeout_us = 20_000
    queue = make_scheduler(max_batch_size=8, batch_timeout_micros=timeout_us).add_queue(
        compute, "m")
    result = queue.submit(rows(3)).result(30)  # would hang if no thread woke at the deadline
    np.testing.assert_array_equal(result.outputs["y"], [[6, 6]])
    assert compute.sizes() == [1]
    assert result.queue_us >= timeout_us  # it may not run before its batch's timeout


def test_tasks_arriving_within_the_timeout_share_one_batch(make_scheduler):
    compute = GatedCompute(hold_first=False)
    queue = make_scheduler(max_batch_size=3, batch_timeout_micros=HOUR_US).add_queue(compute, "m")
    futures = [queue.submit(rows(i)) for i in range(3)]  # the third fills the batch
    for future in futures:
        future.result(30)
    assert compute.sizes() == [3]


def test_each_concurrent_client_gets_exactly_its_own_rows(make_scheduler):
    def compute(inputs):
        x = inputs["x"]
        return {"y": x * 2, "first": x[:, 0] + 0.5}

    observer = RecordingObserver()
    queue = make_scheduler(observer, max_batch_size=8, batch_timeout_micros=500,
                           num_batch_threads=2).add_queue(compute, "m")
    failures: list[str] = []

    def client(client_id: int) -> None:
        for request in range(40):
            count = 1 + (client_id + request) % 3
            values = [client_id * 1000 + request * 10 + row for row in range(count)]
            result = queue.submit(rows(*values, width=3)).result(30)
            expected = np.array([[v] * 3 for v in values], dtype=np.float32)
            if not (np.array_equal(result.outputs["y"], expected * 2)
                    and np.array_equal(result.outputs["first"], expected[:, 0] + 0.5)):
                failures.append(f"client {client_id} request {request}: {result.outputs}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(batch[1] for batch in observer.batches) == sum(
        1 + (c + r) % 3 for c in range(16) for r in range(40))
    assert all(size <= 8 for _, size, _, _ in observer.batches)


def test_full_queue_rejects_at_once_with_unavailable(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=2, max_enqueued_batches=2).add_queue(compute, "m")
    hold_thread(queue, compute)
    accepted = [queue.submit(rows(i)) for i in range(4)]  # two batches of two
    rejected = queue.submit(rows(9))
    assert rejected.done()  # answered before submit returned: the caller never blocks
    error = error_of(rejected)
    assert error.code is Code.UNAVAILABLE and error.http_status == 503
    assert error.message.startswith(
        "The batch scheduling queue to which this task was submitted is full")
    assert not any(future.done() for future in accepted)
    compute.release.set()
    for future in accepted:
        future.result(30)


def test_padding_up_to_an_allowed_size_never_leaks(make_scheduler):
    compute = GatedCompute()
    observer = RecordingObserver()
    queue = make_scheduler(observer, max_batch_size=8, allowed_batch_sizes=(2, 4, 8)).add_queue(
        compute, "m")
    hold_thread(queue, compute)
    futures = [queue.submit(rows(10)), queue.submit(rows(20, 21))]
    compute.release.set()
    np.testing.assert_array_equal(futures[0].result(30).outputs["y"], [[20, 20]])
    np.testing.assert_array_equal(futures[1].result(30).outputs["y"], [[40, 40], [42, 42]])
    padded = compute.batches[1]["x"]
    assert len(padded) == 4
    np.testing.assert_array_equal(padded[3], padded[1])  # a real row of the last task, repeated
    assert observer.batches[1] == ("m", 3, 4, 1)
    assert observer.batches[0] == ("m", 1, 2, 1)  # the held batch of one was padded to 2


def test_task_larger_than_max_batch_size_fails_invalid_argument(make_scheduler):
    queue = make_scheduler(max_batch_size=4).add_queue(GatedCompute(hold_first=False), "m")
    future = queue.submit(rows(1, 2, 3, 4, 5))
    error = error_of(future)
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message == "Task size 5 is larger than maximum input batch size 4"


def test_large_task_is_split_across_batches_and_reassembled(make_scheduler):
    compute = GatedCompute()
    observer = RecordingObserver()
    queue = make_scheduler(observer, max_batch_size=10, enable_large_batch_splitting=True,
                           max_execution_batch_size=4).add_queue(compute, "m")
    hold_thread(queue, compute)
    small = queue.submit(rows(100))
    large = queue.submit(rows(*range(7)))
    compute.release.set()
    np.testing.assert_array_equal(small.result(30).outputs["y"], [[200, 200]])
    result = large.result(30)
    np.testing.assert_array_equal(result.outputs["y"], [[2 * v, 2 * v] for v in range(7)])
    # The open batch is filled first (1 + 3 rows), then a whole execution batch of 4.
    assert compute.sizes() == [1, 4, 4]
    assert len(observer.queued) == 1 + 1 + 2  # one queue time per piece, as TF Serving


def test_split_task_fails_when_the_queue_lacks_room_for_all_its_pieces(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=10, enable_large_batch_splitting=True,
                           max_execution_batch_size=2, max_enqueued_batches=2).add_queue(
        compute, "m")
    hold_thread(queue, compute)
    error = error_of(queue.submit(rows(*range(5))))  # room for 2 batches of 2 rows only
    assert error.code is Code.UNAVAILABLE
    assert "task size is 5 but scheduling capacity is only 4" in error.message
    compute.release.set()


def test_task_whose_deadline_passed_in_the_queue_is_dropped_from_its_batch(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=8).add_queue(compute, "m")
    hold_thread(queue, compute)
    expired = queue.submit(InferenceTask({"x": np.full((1, 2), 5.0, np.float32)},
                                         deadline=time.monotonic()))
    alive = queue.submit(rows(7))
    compute.release.set()
    error = error_of(expired)
    assert error.code is Code.DEADLINE_EXCEEDED and error.http_status == 504
    np.testing.assert_array_equal(alive.result(30).outputs["y"], [[14, 14]])
    np.testing.assert_array_equal(compute.batches[1]["x"], [[7, 7]])  # 5 never reached the model


def test_cancelled_task_is_not_run(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=8).add_queue(compute, "m")
    hold_thread(queue, compute)
    cancelled = queue.submit(rows(5))
    kept = queue.submit(rows(6))
    assert cancelled.cancel()
    compute.release.set()
    kept.result(30)
    np.testing.assert_array_equal(compute.batches[1]["x"], [[6, 6]])


def test_inputs_with_different_inner_shapes_fail_alone(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=8).add_queue(compute, "m")
    hold_thread(queue, compute)
    good = queue.submit(rows(1, width=2))
    odd = queue.submit(rows(2, width=3))
    compute.release.set()
    good.result(30)
    error = error_of(odd)
    assert error.code is Code.INVALID_ARGUMENT
    assert "'x'" in error.message and "pad_variable_length_inputs" in error.message


def test_pad_variable_length_inputs_pads_inner_dimensions_with_the_first_element(make_scheduler):
    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=8, pad_variable_length_inputs=True).add_queue(
        compute, "m")
    hold_thread(queue, compute)
    short = queue.submit(InferenceTask({"x": np.array([[3.0, 4.0]], np.float32)}))
    long = queue.submit(InferenceTask({"x": np.array([[5.0, 6.0, 7.0]], np.float32)}))
    compute.release.set()
    np.testing.assert_array_equal(short.result(30).outputs["y"], [[6, 8, 6]])
    np.testing.assert_array_equal(long.result(30).outputs["y"], [[10, 12, 14]])
    np.testing.assert_array_equal(compute.batches[1]["x"], [[3, 4, 3], [5, 6, 7]])


def test_inputs_with_unequal_rows_fail_with_tf_servings_message(make_scheduler):
    queue = make_scheduler().add_queue(GatedCompute(hold_first=False), "m")
    task = InferenceTask({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
    error = error_of(queue.submit(task))
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message == "Batching Run() input tensors must have equal 0th-dimension size"


def test_model_error_reaches_every_request_of_the_batch(make_scheduler):
    class OpError(Exception):  # shaped like tf.errors.OpError: carries a TF status code
        error_code = Code.RESOURCE_EXHAUSTED.value
        message = "out of memory"

    def compute(inputs):
        raise OpError()

    queue = make_scheduler(max_batch_size=8).add_queue(compute, "m")
    error = error_of(queue.submit(rows(1)))
    assert error.code is Code.RESOURCE_EXHAUSTED and error.message == "out of memory"


def test_at_most_num_batch_threads_batches_run_at_once(make_scheduler):
    inside = threading.Condition()
    state = {"now": 0, "max": 0, "release": False}

    def compute(inputs):
        with inside:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            inside.notify_all()
            inside.wait_for(lambda: state["release"], 30)
            state["now"] -= 1
        return {"y": inputs["x"]}

    scheduler = make_scheduler(max_batch_size=1, num_batch_threads=2)
    queues = [scheduler.add_queue(compute, f"q{i}") for i in range(3)]
    futures = [queue.submit(rows(i)) for i, queue in enumerate(queues) for _ in range(2)]
    with inside:
        assert inside.wait_for(lambda: state["now"] == 2, 30)  # both threads busy
        state["release"] = True
        inside.notify_all()
    for future in futures:
        future.result(30)
    assert state["max"] == 2


def test_queues_take_turns_on_a_shared_thread(make_scheduler):
    order: list[str] = []
    gate = threading.Event()
    entered = threading.Event()

    def compute_for(name):
        def compute(inputs):
            order.append(name)
            if len(order) == 1:
                entered.set()
                gate.wait(30)
            return {"y": inputs["x"]}
        return compute

    scheduler = make_scheduler(max_batch_size=1)
    a = scheduler.add_queue(compute_for("a"), "a")
    b = scheduler.add_queue(compute_for("b"), "b")
    futures = [a.submit(rows(0))]
    assert entered.wait(30)
    futures += [a.submit(rows(i)) for i in range(3)] + [b.submit(rows(i)) for i in range(3)]
    gate.set()
    for future in futures:
        future.result(30)
    assert order[1:] == ["b", "a", "b", "a", "b", "a"]


def test_scheduler_close_fails_queued_tasks_and_finishes_running_ones(make_scheduler):
    compute = GatedCompute()
    scheduler = make_scheduler(max_batch_size=8, batch_timeout_micros=HOUR_US)
    queue = scheduler.add_queue(compute, "m")
    running = queue.submit(rows(*range(8)))  # a full batch runs at once
    assert compute.entered.wait(30)
    queued = [queue.submit(rows(i)) for i in range(3)]
    closer = threading.Thread(target=scheduler.close)
    closer.start()
    for future in queued:
        error = error_of(future)
        assert error.code is Code.UNAVAILABLE
    compute.release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert len(running.result(30).outputs["y"]) == 8
    assert error_of(queue.submit(rows(1))).code is Code.UNAVAILABLE


def test_queue_close_runs_what_it_accepted_without_waiting_for_the_timeout(make_scheduler):
    compute = GatedCompute(hold_first=False)
    queue = make_scheduler(max_batch_size=8, batch_timeout_micros=HOUR_US).add_queue(compute, "m")
    future = queue.submit(rows(4))
    queue.close()
    np.testing.assert_array_equal(future.result(0).outputs["y"], [[8, 8]])
    assert error_of(queue.submit(rows(1))).code is Code.UNAVAILABLE


def test_observer_sees_each_tasks_queue_time(make_scheduler):
    observer = RecordingObserver()
    queue = make_scheduler(observer, max_batch_size=8).add_queue(
        GatedCompute(hold_first=False), "pooch_predictor/1/serving_default")
    results = [queue.submit(rows(i)).result(30) for i in range(3)]
    assert [name for name, _ in observer.queued] == ["pooch_predictor/1/serving_default"] * 3
    assert all(result.queue_us >= 0 and result.compute_us >= 0 for result in results)


def test_a_queue_is_never_run_on_the_loop_and_run_waits_for_its_batch_until_the_deadline(make_scheduler) -> None:
    """The InferenceSession calls the handlers make without knowing the session's class."""
    import asyncio

    compute = GatedCompute()
    queue = make_scheduler(max_batch_size=4, batch_timeout_micros=0).add_queue(compute, "m")
    assert queue.runs_quickly is False
    first = queue.submit(rows(1.0))
    assert compute.entered.wait(30)  # the only batch thread is held inside the first batch
    late = InferenceTask({"x": np.array([[2.0, 2.0]], dtype=np.float32)}, deadline=time.monotonic() - 1.0)
    with pytest.raises(ServingError) as error:
        queue.run(late)  # its batch cannot run while the gate holds: the past deadline ends the wait
    assert error.value.code == Code.DEADLINE_EXCEEDED
    compute.release.set()
    assert first.result(30).outputs["y"].tolist() == [[2.0, 2.0]]
    answer = queue.run(rows(3.0))  # no deadline: waits for its batch and returns its rows
    assert answer.outputs["y"].tolist() == [[6.0, 6.0]]

    async def on_a_loop() -> list[list[float]]:
        result = await queue.submit_to_loop(rows(4.0), asyncio.get_running_loop())
        return result.outputs["y"].tolist()

    assert asyncio.run(on_a_loop()) == [[8.0, 8.0]]
