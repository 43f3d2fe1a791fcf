"""The session without batching: every task runs on its own in a shared thread pool.

TF Serving without ``--enable_batching`` runs each request's Session::Run on the calling
thread; here the calling thread is the event loop, which must never block, so the run moves to
a pool and the handler awaits its future.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

from poochlab.serving.model_threads import ModelThreads
from poochlab.serving.session import Compute, InferenceResult, InferenceTask
from poochlab.serving.status import Code, ServingError


class DirectSession:
    """An :class:`~poochlab.serving.session.InferenceSession` that runs tasks one by one."""

    def __init__(self, compute: Compute, threads: ModelThreads) -> None:
        self._compute = compute
        self._threads = threads
        self._closed = False

    def submit(self, task: InferenceTask) -> "Future[InferenceResult]":
        if self._closed:
            future: Future[InferenceResult] = Future()
            future.set_exception(ServingError(Code.UNAVAILABLE, "Servable is being unloaded"))
            return future
        return self._threads.submit(self.run, task)

    def submit_to_loop(self, task: InferenceTask, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """:meth:`submit` for an event loop: an asyncio future, with the cheaper hand-off."""
        if self._closed:
            future = loop.create_future()
            future.set_exception(ServingError(Code.UNAVAILABLE, "Servable is being unloaded"))
            return future
        return self._threads.submit_to_loop(self.run, task, loop)

    def run(self, task: InferenceTask) -> InferenceResult:
        """Run ``task`` on the calling thread (for callers that may block, e.g. gRPC workers)."""
        started = time.monotonic()
        if task.deadline is not None and started > task.deadline:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before the model ran")
        try:
            outputs = self._compute(task.inputs)
        except ServingError:
            raise
        except Exception as error:  # a model failure is the request's error, never the server's
            raise ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}") from None
        done = time.monotonic()
        return InferenceResult(
            outputs=outputs,
            queue_us=(started - task.enqueued_at) * 1e6,
            compute_us=(done - started) * 1e6,
        )

    def close(self) -> None:
        self._closed = True
