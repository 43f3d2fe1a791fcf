"""Locust users for load spread over machines or cores: Locust's own distributed mode against TF Serving.

The lab's sweeps drive Locust as a library on one machine (experiments/load/). When one machine
or core cannot generate enough load, run this file with Locust's master and workers instead
(compose's `locust` profile, `locust -f docker/locustfile.py --worker --master-host=<master>` on
other machines, or `--processes N` on one machine): each user sends Pooch Predictor requests to
TF Serving (REST of --host, the balancer; gRPC when configured), drawn from the model's seeded
pupdate generator, and checks every answer.

Latencies are recorded the lab's way (poochlab.experiments.load.distributed_recording): unrounded,
in HdrHistograms merged losslessly on the master, written with `--hdr-output <file.json>`
(or LOCUST_HDR_OUTPUT) and printed at the end. Locust's own percentiles are rounded: never
report them.

Settings (environment, the same on master and workers): POOCHLAB_MODEL (pooch_predictor),
POOCHLAB_INSTANCES (rows per request, 1), POOCHLAB_SEED (0), POOCHLAB_TIMEOUT_S (per request, 5),
POOCHLAB_GRPC_TARGET (host:port of TF Serving's gRPC; unset: no gRPC users).
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from locust import FastHttpUser, User, constant, task

import poochlab.experiments.load.distributed_recording  # noqa: F401  (its listeners record every request)
from poochlab.clients.prediction import KIND_BAD_RESPONSE, KIND_CONNECTION, PredictionError
from poochlab.models.facts import generate_pupdates

MODEL = os.environ.get("POOCHLAB_MODEL", "pooch_predictor")
INSTANCES = int(os.environ.get("POOCHLAB_INSTANCES", "1"))
SEED = int(os.environ.get("POOCHLAB_SEED", "0"))
TIMEOUT_S = float(os.environ.get("POOCHLAB_TIMEOUT_S", "5"))
GRPC_TARGET = os.environ.get("POOCHLAB_GRPC_TARGET", "")
_PUPDATES = generate_pupdates(2_000, SEED)
_POOL = [p.signature_inputs() for p in _PUPDATES]


class TFServingRestUser(FastHttpUser):
    """A closed-loop REST user: next request as soon as the last one is answered."""

    wait_time = constant(0)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def on_start(self) -> None:
        # Each user its own seeded stream, so runs repeat and users do not move in lockstep.
        self.random = random.Random(f"{SEED}:{id(self)}")

    @task
    def predict(self) -> None:
        body = {"instances": self.random.sample(_POOL, INSTANCES)}
        with self.client.post(f"/v1/models/{MODEL}:predict", data=json.dumps(body),
                              headers={"Content-Type": "application/json"},
                              name=f"{MODEL}:predict", catch_response=True) as response:
            # Failures carry the clients' kinds (PredictionError.kind), which the recorder counts.
            if response.status_code == 0:
                response.failure(PredictionError(KIND_CONNECTION, str(response.error)[:200]))
                return
            if response.status_code != 200:
                response.failure(PredictionError(f"http_{response.status_code}", response.text[:200]))
                return
            predictions = response.json().get("predictions")
            if not isinstance(predictions, list) or len(predictions) != INSTANCES:
                response.failure(PredictionError(
                    KIND_BAD_RESPONSE, f"expected {INSTANCES} predictions, got {str(predictions)[:200]}"))
            else:
                response.success()


class TFServingGrpcUser(User):
    """A closed-loop gRPC user through poochlab.clients (one predictor per process, made after fork)."""

    abstract = not GRPC_TARGET  # only when POOCHLAB_GRPC_TARGET names TF Serving's gRPC port
    wait_time = constant(0)
    _predictor: Any = None
    _predictor_pid: int | None = None

    def on_start(self) -> None:
        self.random = random.Random(f"{SEED}:grpc:{id(self)}")
        cls = TFServingGrpcUser
        if cls._predictor_pid != os.getpid():
            from grpc.experimental import gevent as grpc_gevent

            from poochlab.clients import ClientConfig, build_predictor

            # gRPC under gevent needs init_gevent() before its first channel, once per process.
            grpc_gevent.init_gevent()
            cls._predictor = build_predictor(ClientConfig(protocol="grpc", grpc_target=GRPC_TARGET,
                                                          model_name=MODEL, timeout_s=TIMEOUT_S))
            cls._predictor_pid = os.getpid()

    @task
    def predict(self) -> None:
        rows = self.random.sample(_PUPDATES, INSTANCES)
        started = time.perf_counter()
        exception: BaseException | None = None
        try:
            self._predictor.predict(rows)
        except Exception as error:  # PredictionError has the kind; anything else is counted by type
            exception = error
        self.environment.events.request.fire(
            request_type="grpc", name=f"{MODEL}:predict (grpc)",
            response_time=(time.perf_counter() - started) * 1000.0, response_length=INSTANCES,
            exception=exception, context={})
