"""What every sender in a load-generator worker holds: the fields both the gevent
:class:`~poochlab.experiments.load.sender.Sender` and the OS-thread
:class:`~poochlab.experiments.load.thread_sender.ThreadSender` set up alike, the two
questions the worker asks of either (the next request stream, the requests still in flight),
and what both measure (:func:`measured_span`)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from poochlab.clients.prediction import Prediction
    from poochlab.experiments.load.rate_schedule import Arrivals


class SenderBase:
    """The shared state of a sender; subclasses add how requests are sent and scheduled."""

    def __init__(self, predictor: Any, events: Any, kind: str, workload: Any, *, open_loop: bool,
                 rate_rps: float | None, seed: int, stream_base: int, stream_count: int,
                 start_at: float, arrivals: Arrivals | None = None) -> None:
        self.predictor = predictor
        self.events = events
        self.kind = kind
        self.workload = workload
        self.open_loop = open_loop
        self.rate_rps = rate_rps
        self.seed = seed
        self.start_at = start_at
        # Open loop: the send times (a rate schedule's, else Poisson at rate_rps from start_at).
        self.arrivals = arrivals
        self.stopping = False
        self.stream_count = stream_count
        self.sender_greenlets = 0
        self._streams = itertools.count(stream_base)
        self._tokens = itertools.count()
        self._in_flight: dict[int, float] = {}  # token -> start, until its event has fired

    def next_stream(self) -> Iterator[list[Any]]:
        return self.workload.stream(next(self._streams), self.stream_count)

    def in_flight_started_before(self, moment: float) -> int:
        # A copy: a ThreadSender's threads add and remove entries while this counts.
        return sum(1 for start in list(self._in_flight.values()) if start < moment)


def measured_span(scheduled: float | None, sent: float, returned: float,
                  prediction: Prediction | None) -> tuple[float, float]:
    """A request's latency as (start, end), ``time.monotonic`` seconds.

    It ends when the last answer was read (the prediction's ``answered_at``), before the client
    decodes it, and starts at the scheduled send time in an open loop (lateness counts: the
    request was due then), else when the first request went out (``sent_at``, after encoding):
    what wrk and k6 count, so the lab's closed loop compares with them; the client's own
    encoding and decoding are recorded apart. A call without those stamps (a failure, a
    baseline answer) runs from ``sent`` to ``returned``, the sender's own stamps around it.
    """
    timing = None if prediction is None else prediction.timing
    end = returned if timing is None or timing.answered_at is None else timing.answered_at
    if scheduled is not None:
        return scheduled, end
    return (sent if timing is None or timing.sent_at is None else timing.sent_at), end
