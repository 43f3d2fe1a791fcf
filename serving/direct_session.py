"""The session without batching: every task runs on its own in a shared thread pool.

TF Serving without ``--enable_batching`` runs each request's Session::Run on the calling
thread; here the calling thread is the event loop, which must not block for long, so the run
usually moves to a pool and the handler awaits its future. A REST request that is the only one
the server is answering may run on the loop itself when the model is known to be quick
(:attr:`DirectSession.runs_quickly`): nothing waits behind it, and the two thread hand-offs
(each a wake-up on a busy core) cost more than such a model's own run.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future

from poochlab.serving.model_threads import ModelThreads
from poochlab.serving.inference_session import Compute, InferenceResult, InferenceTask
from poochlab.serving.status import Code, ServingError


# A model whose recent runs took less than this may run on the event loop (see the module
# docstring): a request arriving meanwhile waits at most about this long.
INLINE_BUDGET_US = 2000.0


class DirectSession:
    """An :class:`~poochlab.serving.inference_session.InferenceSession` that runs tasks one by one."""

    def __init__(self, compute: Compute, threads: ModelThreads) -> None:
        self._compute = compute
        self._threads = threads
        self._closed = False
        # Moving average of compute time; unknown (infinite) until the model has run once.
        self._recent_compute_us = float("inf")

    @property
    def runs_quickly(self) -> bool:
        """Whether the model's recent runs fit :data:`INLINE_BUDGET_US` (may run on a loop)."""
        return not self._closed and self._recent_compute_us < INLINE_BUDGET_US

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
        """Run ``task`` on the calling thread (for callers that may block, e.g. gRPC's handler threads)."""
        started = time.monotonic()
        if task.deadline is not None and started > task.deadline:
            raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded before the model ran")
        try:
            outputs = self._compute(task.inputs)
        except ServingError:
            raise
        except Exception as error:  # a model failure is the request's error, never the server's
            raise ServingError(Code.INTERNAL, f"{type(error).__name__}: {error}") from None
        compute_us = (time.monotonic() - started) * 1e6
        recent = self._recent_compute_us
        # A plain float store: threads may race here, and any of their values is good enough.
        self._recent_compute_us = compute_us if recent == float("inf") else 0.8 * recent + 0.2 * compute_us
        return InferenceResult(
            outputs=outputs,
            queue_us=(started - task.enqueued_at) * 1e6,
            compute_us=compute_us,
        )

    def close(self) -> None:
        self._closed = True
