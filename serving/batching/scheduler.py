"""TF Serving's shared batch scheduler: queues of tasks, batches, and a shared pool of threads.

One :class:`SharedBatchScheduler` owns ``num_batch_threads`` threads; the server adds one queue
per model version and signature (:meth:`SharedBatchScheduler.add_queue`), and each queue is an
:class:`~poochlab.serving.inference_session.InferenceSession`. As in TF Serving
(``tensorflow/core/kernels/batching_util/shared_batch_scheduler.h``):

- a queue is a list of batches whose last one is open; a task joins the open batch, or closes it
  and opens a new one when it would not fit (``max_batch_size`` rows, or
  ``max_execution_batch_size`` with ``enable_large_batch_splitting``);
- the open batch may run once it is full or once its oldest task has waited
  ``batch_timeout_micros`` (at once when that is 0), and only when a thread is free, so tasks
  keep joining it while every thread is busy;
- free threads take batches from the queues in round-robin order;
- a task that would need more than ``max_enqueued_batches`` batches fails at once with
  UNAVAILABLE; nothing ever blocks the caller of ``submit``.

The threads sleep on a condition variable: a submit wakes one when a batch becomes runnable or
a new timeout starts, and a thread waits exactly until the earliest open batch's timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Mapping

import numpy as np

from poochlab.serving.batching.observer import BatchingObserver
from poochlab.serving.batching.parameters import BatchingParameters
from poochlab.serving.batching.tensors import (
    concat_pieces, incompatibility, merge_inputs, slice_rows, split_outputs, task_rows,
)
from poochlab.serving.inference_session import Compute, InferenceResult, InferenceSession, InferenceTask, wait_for_result
from poochlab.serving.status import Code, ServingError

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT_MESSAGE = "Run() timeout exceeded while waiting in batching queue"


class _Task:
    """One submitted request: its future and, when split, the pieces' answers so far."""

    __slots__ = ("future", "inputs", "rows", "deadline", "submitted", "queue_us", "compute_us",
                 "lock", "parts", "pieces_left", "running", "done")

    def __init__(self, future: Future, inputs: Mapping[str, np.ndarray], rows: int,
                 deadline: float | None, submitted: float) -> None:
        self.future = future
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.submitted = submitted
        self.queue_us = 0.0
        self.compute_us = 0.0
        # Only split tasks, whose pieces finish on different threads, need these.
        self.lock: threading.Lock | None = None
        self.parts: list[dict[str, np.ndarray] | None] = []
        self.pieces_left = 1
        self.running = False
        self.done = False


class _Piece:
    """The rows of one task that travel in one batch (the whole task unless it was split)."""

    __slots__ = ("task", "inputs", "rows", "index")

    def __init__(self, task: _Task, inputs: Mapping[str, np.ndarray], rows: int,
                 index: int) -> None:
        self.task = task
        self.inputs = inputs
        self.rows = rows
        self.index = index


class _Batch:
    __slots__ = ("pieces", "rows", "started")

    def __init__(self) -> None:
        self.pieces: list[_Piece] = []
        self.rows = 0
        self.started = 0.0  # time.monotonic() when its first piece arrived


def _serving_error(error: BaseException) -> ServingError:
    """The status a failed batch reports to each of its requests."""
    if isinstance(error, ServingError):
        return error
    code = getattr(error, "error_code", None)  # tf.errors.OpError carries its TF status code
    if isinstance(code, int) and code in Code._value2member_map_:
        return ServingError(Code(code), getattr(error, "message", None) or str(error))
    return ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}")


def _fail(future: Future, error: ServingError) -> None:
    try:
        future.set_exception(error)
    except InvalidStateError:  # already answered, cancelled, or failed by close()
        pass


def _resolve(future: Future, result: InferenceResult) -> None:
    try:
        future.set_result(result)
    except InvalidStateError:  # failed by close() while its batch ran
        pass


class _Queue:
    """One model version's (and signature's) queue; implements ``InferenceSession``."""

    def __init__(self, scheduler: "SharedBatchScheduler", compute: Compute, name: str) -> None:
        self.name = name
        self._scheduler = scheduler
        self._cv = scheduler._cv
        self._params = scheduler.params
        self._limit = scheduler.params.max_execution_batch_size
        self._timeout_s = scheduler.params.batch_timeout_micros / 1e6
        self._compute = compute
        self._observer = scheduler._observer
        self._batches: deque[_Batch] = deque([_Batch()])
        self._running = 0  # batches of this queue on a thread right now
        self._closed = False

    # --- the caller's side ------------------------------------------------------------
    def submit(self, task: InferenceTask) -> "Future[InferenceResult]":
        """Queue ``task``; never blocks. Errors arrive on the future as ``ServingError``."""
        future: Future = Future()
        try:
            rows = task_rows(task.inputs)
        except ServingError as error:
            future.set_exception(error)
            return future
        if rows > self._params.max_batch_size:
            future.set_exception(ServingError(
                Code.INVALID_ARGUMENT,
                f"Task size {rows} is larger than maximum input batch size "
                f"{self._params.max_batch_size}"))
            return future
        state = _Task(future, task.inputs, rows, task.deadline, time.monotonic())
        with self._cv:
            refusal = self._refusal_locked(rows)
            if refusal is None and self._enqueue_locked(state):
                self._cv.notify()
        if refusal is not None:
            future.set_exception(refusal)
        return future

    def submit_to_loop(self, task: InferenceTask, loop: asyncio.AbstractEventLoop) -> "asyncio.Future[InferenceResult]":
        return asyncio.wrap_future(self.submit(task), loop=loop)

    def run(self, task: InferenceTask) -> InferenceResult:
        """Wait for ``task``'s batch on the calling thread, at most until its deadline."""
        return wait_for_result(self.submit(task), task.deadline)

    @property
    def runs_quickly(self) -> bool:
        return False  # a task waits for its batch: never on an event loop's own thread

    def close(self) -> None:
        """Refuse new tasks, run every queued one, and wait until they are answered.

        As TF Serving's queue destructor: a model version being unloaded still answers what it
        accepted. (``SharedBatchScheduler.close`` instead fails what is queued.)
        """
        with self._cv:
            self._closed = True
            self._cv.notify_all()  # a closed queue's open batch may run at once
            while self._running or self._batches[0].pieces:
                self._cv.wait()
            if self in self._scheduler._queues:
                self._scheduler._remove_queue_locked(self)

    # --- enqueueing (under the scheduler's lock) -----------------------------------------
    def _refusal_locked(self, rows: int) -> ServingError | None:
        if self._closed:
            return ServingError(Code.UNAVAILABLE,
                                f"The batch scheduling queue '{self.name}' is closed")
        params, batches = self._params, self._batches
        if params.enable_large_batch_splitting:
            free_batches = params.max_enqueued_batches - len(batches)
            capacity = free_batches * self._limit + (self._limit - batches[-1].rows)
            if rows > capacity:
                return ServingError(
                    Code.UNAVAILABLE,
                    f"{QUEUE_FULL_MESSAGE}; task size is {rows} but scheduling capacity is only "
                    f"{capacity} (num_enqueued_batches={len(batches)}, max_enqueued_batches="
                    f"{params.max_enqueued_batches}, open_batch_size={batches[-1].rows}, "
                    f"max_execution_batch_size={self._limit})")
        elif (batches[-1].rows + rows > params.max_batch_size
              and len(batches) >= params.max_enqueued_batches):
            return ServingError(
                Code.UNAVAILABLE,
                f"{QUEUE_FULL_MESSAGE}; currently {len(batches)} batches enqueued and "
                f"max_enqueued_batches is {params.max_enqueued_batches}")
        return None

    def _piece_sizes(self, rows: int) -> list[int]:
        room = self._limit - self._batches[-1].rows
        if not self._params.enable_large_batch_splitting or rows <= room:
            return [rows]
        # TF Serving's split: fill the open batch, then whole execution batches.
        sizes = [room] if room > 0 else []
        left = rows - max(room, 0)
        while left > 0:
            sizes.append(min(left, self._limit))
            left -= sizes[-1]
        return sizes

    def _enqueue_locked(self, task: _Task) -> bool:
        """Add ``task``'s pieces; True when a thread should look at this queue now."""
        sizes = self._piece_sizes(task.rows)
        if len(sizes) > 1:
            task.lock = threading.Lock()
            task.parts = [None] * len(sizes)
            task.pieces_left = len(sizes)
        wake = False
        start = 0
        for index, rows in enumerate(sizes):
            inputs = task.inputs if len(sizes) == 1 else slice_rows(task.inputs, start, start + rows)
            start += rows
            batch = self._batches[-1]
            if batch.rows + rows > self._limit:
                batch = _Batch()
                self._batches.append(batch)
                wake = True  # the batch it closed may run
            if not batch.pieces:
                batch.started = task.submitted
                wake = True  # a new timeout starts (or, with timeout 0, a runnable batch)
            batch.pieces.append(_Piece(task, inputs, rows, index))
            batch.rows += rows
            if batch.rows >= self._limit:
                wake = True
        return wake

    # --- the batch threads' side (under the scheduler's lock) ---------------------------
    def _has_work_locked(self) -> bool:
        return bool(self._batches[0].pieces)

    def _take_batch_locked(self, now: float) -> tuple[_Batch | None, float | None]:
        """A batch that may run now, else the time at which the open batch may run."""
        batches = self._batches
        if len(batches) == 1:
            open_batch = batches[0]
            if not open_batch.pieces:
                return None, None
            runs_at = open_batch.started + self._timeout_s
            if not (self._closed or open_batch.rows >= self._limit or now >= runs_at):
                return None, runs_at
            batches.append(_Batch())
        self._running += 1
        return batches.popleft(), None

    def _discard_locked(self) -> list[_Piece]:
        pieces = [piece for batch in self._batches for piece in batch.pieces]
        self._batches = deque([_Batch()])
        self._closed = True
        return pieces

    # --- running a batch (on a batch thread, without the lock) ---------------------------
    def _admit(self, piece: _Piece, now: float) -> ServingError | bool:
        """Whether ``piece`` runs: True, False (drop it silently) or the error its task gets."""
        task = piece.task
        expired = task.deadline is not None and now > task.deadline
        if task.lock is None:
            if expired:
                return ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT_MESSAGE)
            if not task.future.set_running_or_notify_cancel():
                return False  # the caller cancelled it while it was queued
            task.queue_us = (now - task.submitted) * 1e6
            return True
        with task.lock:
            if task.done:
                return False  # another piece already failed it
            if expired:
                return ServingError(Code.DEADLINE_EXCEEDED, QUEUE_TIMEOUT_MESSAGE)
            if not task.running:
                if not task.future.set_running_or_notify_cancel():
                    task.done = True
                    return False
                task.running = True
                task.queue_us = (now - task.submitted) * 1e6
            return True

    @staticmethod
    def _fail_piece(piece: _Piece, error: ServingError) -> None:
        """Fail the piece's task, once: the other pieces of a split task are then dropped."""
        task = piece.task
        if task.lock is not None:
            with task.lock:
                if task.done:
                    return
                task.done = True
        _fail(task.future, error)

    @staticmethod
    def _deliver(piece: _Piece, outputs: dict[str, np.ndarray], compute_us: float) -> None:
        task = piece.task
        if task.lock is None:
            _resolve(task.future, InferenceResult(outputs, task.queue_us, compute_us))
            return
        with task.lock:
            if task.done:
                return
            task.parts[piece.index] = outputs
            task.compute_us += compute_us
            task.pieces_left -= 1
            if task.pieces_left:
                return
            task.done = True
        parts = [part for part in task.parts if part is not None]
        assert len(parts) == len(task.parts)  # the task's last piece has run: every part is in
        try:
            merged = concat_pieces(parts)
        except ValueError as error:
            _fail(task.future, ServingError(
                Code.INTERNAL, f"Cannot reassemble the outputs of a split request: {error}"))
            return
        _resolve(task.future, InferenceResult(merged, task.queue_us, task.compute_us))

    def _run(self, batch: _Batch) -> None:
        """Drop expired and cancelled tasks, merge the rest, run the model, answer each."""
        now = time.monotonic()
        observer = self._observer
        live: list[_Piece] = []
        for piece in batch.pieces:
            if observer is not None:
                observer.on_task_queued(self.name, (now - piece.task.submitted) * 1e6)
            verdict = self._admit(piece, now)
            if isinstance(verdict, ServingError):
                self._fail_piece(piece, verdict)
                continue
            if not verdict:
                continue
            if live:
                reason = incompatibility(live[0].inputs, piece.inputs,
                                         self._params.pad_variable_length_inputs)
                if reason is not None:
                    self._fail_piece(piece, ServingError(Code.INVALID_ARGUMENT, reason))
                    continue
            live.append(piece)
        if not live:
            return
        rows = sum(piece.rows for piece in live)
        padded = self._params.padded_size(rows) if rows else 0
        if observer is not None:
            observer.on_batch(self.name, rows, padded, padded - rows)
        try:
            merged = merge_inputs([piece.inputs for piece in live], padded,
                                  self._params.pad_variable_length_inputs)
            started = time.perf_counter()
            outputs = self._compute(merged)
            compute_us = (time.perf_counter() - started) * 1e6
            parts = split_outputs(outputs, [piece.rows for piece in live], padded)
        except Exception as error:  # the model's failure is every request's failure
            failure = _serving_error(error)
            for piece in live:
                self._fail_piece(piece, failure)
            return
        for piece, part in zip(live, parts):
            self._deliver(piece, part, compute_us)


class SharedBatchScheduler:
    """``num_batch_threads`` threads shared by every queue added with :meth:`add_queue`."""

    def __init__(self, params: BatchingParameters,
                 observer: BatchingObserver | None = None) -> None:
        self.params = params
        self._observer = observer
        self._cv = threading.Condition(threading.Lock())
        self._queues: list[_Queue] = []
        self._next_queue = 0  # round-robin position
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{params.thread_pool_name}_{index}",
                             daemon=True)
            for index in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def add_queue(self, compute: Compute, name: str) -> InferenceSession:
        """A new queue (one per model version and signature) whose batches run ``compute``."""
        queue = _Queue(self, compute, name)
        with self._cv:
            if self._closed:
                raise RuntimeError("add_queue on a closed SharedBatchScheduler")
            self._queues.append(queue)
        return queue

    def close(self) -> None:
        """Fail every queued task (UNAVAILABLE), let running batches finish, stop the threads."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            dropped = [piece for queue in self._queues for piece in queue._discard_locked()]
            self._cv.notify_all()
        error = ServingError(Code.UNAVAILABLE,
                             "The batch scheduler is shutting down; the request was not run")
        for piece in dropped:
            _Queue._fail_piece(piece, error)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _remove_queue_locked(self, queue: _Queue) -> None:
        index = self._queues.index(queue)
        del self._queues[index]
        if self._next_queue > index:
            self._next_queue -= 1
        if self._next_queue >= len(self._queues):
            self._next_queue = 0

    def _next_batch_locked(self) -> tuple[_Queue | None, _Batch | None, float | None]:
        """Round-robin over the queues for a runnable batch, else the next time to look."""
        now = time.monotonic()
        count = len(self._queues)
        wake_at: float | None = None
        for offset in range(count):
            index = (self._next_queue + offset) % count
            queue = self._queues[index]
            batch, runs_at = queue._take_batch_locked(now)
            if batch is not None:
                self._next_queue = (index + 1) % count
                return queue, batch, None
            if runs_at is not None and (wake_at is None or runs_at < wake_at):
                wake_at = runs_at
        return None, None, wake_at

    def _work(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed:
                        return
                    queue, batch, wake_at = self._next_batch_locked()
                    if batch is not None:
                        # Hand the rest on: another idle thread watches what is still queued.
                        if any(other._has_work_locked() for other in self._queues):
                            self._cv.notify()
                        break
                    self._cv.wait(None if wake_at is None else max(0.0, wake_at - time.monotonic()))
            assert queue is not None
            try:
                queue._run(batch)
            except BaseException as error:  # never lose a thread, never leave a caller waiting
                failure = _serving_error(error)
                for piece in batch.pieces:
                    _Queue._fail_piece(piece, failure)
            finally:
                with self._cv:
                    queue._running -= 1
                    if queue._closed:
                        self._cv.notify_all()
