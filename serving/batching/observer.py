"""What the batching scheduler reports, for the server's metrics under TF Serving's names."""

from __future__ import annotations

from typing import Protocol


class BatchingObserver(Protocol):
    """Receives one call per batch and one per queued task; called on batch threads.

    Implementations must be quick and must not raise: they run inside the scheduler's
    batch threads, between taking a batch and running it.
    """

    def on_batch(self, queue_name: str, input_batch_size: int, processed_batch_size: int,
                 padding_size: int) -> None:
        """A batch is about to run.

        ``input_batch_size`` counts the requests' rows in it, ``processed_batch_size`` the rows
        the model runs on (after padding up to an allowed batch size) and ``padding_size`` the
        difference (TF Serving's ``processed_batch_size`` and ``padding_size``; TF Serving's
        ``input_batch_size`` is recorded per request, which the caller can do at submit).
        """
        ...

    def on_task_queued(self, queue_name: str, queue_us: float) -> None:
        """A task (or one piece of a split task) left the queue after ``queue_us``
        microseconds (TF Serving's ``batching_session:queuing_latency``)."""
        ...
