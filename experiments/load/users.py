"""Locust users, one class per client kind, each a thin adapter over ``poochlab.clients``.

Import this module only in a load-generator process that has monkey-patched with gevent
(importing Locust patches on its own). A user does no measuring itself: it hands its requests
to the worker's :class:`~poochlab.experiments.load.sender.Sender`, which times them and fires
Locust's ``request`` event with the unrounded latency; the recorder listens to that event.

Closed loop: every user sends its next request when the last one was answered (or on its
``constant_pacing`` beat). Open loop: a single user per worker runs the seeded Poisson schedule,
handing each request to a pool of sender greenlets, so nothing limits outstanding requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import time

import gevent
from locust import LoadTestShape, User, constant, constant_pacing, task

if TYPE_CHECKING:
    from poochlab.clients.config import ClientConfig


class PredictorUser(User):
    """The behaviour shared by every client kind; subclasses only name their kind."""

    abstract = True
    client_kind = "predictor"
    wait_time = constant(0)
    sender: Any = None  # the worker's Sender, set before the runner starts

    def on_start(self) -> None:
        self.requests = self.sender.next_stream()

    @task
    def predict(self) -> None:
        sender = self.sender
        if sender.open_loop:
            sender.run_open_loop(self.requests)
            return
        if sender.stopping:
            gevent.sleep(0.05)
            return
        sender.send(next(self.requests), scheduled=None)


class RestRequestsUser(PredictorUser):
    """REST through the ``requests`` library (Locust's HttpUser's library, slow per call)."""

    client_kind = "rest-requests"


class RestLeanUser(PredictorUser):
    """REST through any other library (lean = httptools on a gevent socket, geventhttpclient, urllib3,
    http.client)."""

    client_kind = "rest-lean"


class GrpcUser(PredictorUser):
    """gRPC through grpcio (the channel is made after gevent's init in the worker)."""

    client_kind = "grpc"


class CachedUser(PredictorUser):
    """Any transport behind the Redis cache-aside."""

    client_kind = "cached"


def user_class_for(client: ClientConfig, pacing: float) -> type[PredictorUser]:
    """The user class for a ClientConfig, with ``pacing`` seconds per request (0: none)."""
    if client.cache is not None:
        base: type[PredictorUser] = CachedUser
    elif client.protocol == "grpc":
        base = GrpcUser
    elif client.resolved_library == "requests":
        base = RestRequestsUser
    else:
        base = RestLeanUser
    wait = constant_pacing(pacing) if pacing > 0 else constant(0)
    return type(base.__name__, (base,), {"wait_time": wait, "abstract": False})


class UsersShape(LoadTestShape):
    """A users_schedule (load/rate_schedule.py) as Locust's own load shape, in one generator process:
    its share of the users at each moment, times from ``origin`` (the measurement start,
    ``time.monotonic``). Locust asks every second, so a step takes effect within a second; users
    leaving finish their request first (the environment's ``stop_timeout``)."""

    def __init__(self, schedule: Any, origin: float, worker: int, workers: int) -> None:
        super().__init__()
        self.schedule, self.origin, self.worker, self.workers = schedule, origin, worker, workers

    def tick(self) -> tuple[int, float]:
        return self.schedule.users_at(time.monotonic() - self.origin, self.worker, self.workers), 10_000.0
