"""The narrow interface between the request handlers and whatever runs the model.

A handler turns a request into an :class:`InferenceTask` (inputs batched along dimension 0)
and submits it to an :class:`InferenceSession`; it gets back a future of an
:class:`InferenceResult`. The direct session runs each task on its own; the batching session
(``serving.batching``) queues tasks and merges them, exactly as TF Serving's
``BatchingSession`` wraps a ``Session``. Handlers cannot tell which one they hold, and the
batching policy can be tested with a fake ``compute`` and no model at all.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import numpy as np

from poochlab.serving.status import Code, ServingError

# Runs one signature on inputs that share dimension 0; returns its outputs, same dimension 0.
Compute = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class InferenceTask:
    """One request's inputs for one signature of one model version."""

    inputs: Mapping[str, np.ndarray]
    # time.monotonic() after which the caller no longer wants the answer; None: no deadline.
    deadline: float | None = None
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        """Rows along dimension 0 (every input has the same)."""
        return int(next(iter(self.inputs.values())).shape[0])


@dataclass(frozen=True)
class InferenceResult:
    outputs: dict[str, np.ndarray]
    queue_us: float  # from submit until the model started on this task
    compute_us: float  # the model run that produced these rows (the whole batch's run)


class InferenceSession(Protocol):
    def submit(self, task: InferenceTask) -> "Future[InferenceResult]":
        """Queue or start ``task``; errors arrive as a ``ServingError`` on the future.

        Must not block the caller: a full queue fails the future at once (UNAVAILABLE).
        """
        ...

    def submit_to_loop(self, task: InferenceTask, loop: asyncio.AbstractEventLoop) -> "asyncio.Future[InferenceResult]":
        """:meth:`submit` for an event loop's caller: an asyncio future (the direct session
        hands off more cheaply than through a concurrent future)."""
        ...

    def run(self, task: InferenceTask) -> InferenceResult:
        """The result of ``task`` on the calling thread, which may block (a gRPC worker): the
        direct session runs the model right here, a batching queue waits for the batch, at most
        until the task's deadline (then DEADLINE_EXCEEDED)."""
        ...

    @property
    def runs_quickly(self) -> bool:
        """Whether :meth:`run` is quick enough to call on an event loop's own thread (a model
        without batching whose recent runs were short); a queue never is."""
        ...

    def close(self) -> None:
        """Finish or fail what is queued and release threads."""
        ...


def wait_for_result(future: "Future[InferenceResult]", deadline: float | None) -> InferenceResult:
    """Block until ``future`` answers, at most until ``deadline`` (time.monotonic())."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded") from None
