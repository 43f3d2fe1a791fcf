"""Locust users for load spread over machines: Locust's own distributed mode against TF Serving.

The lab's sweeps drive Locust as a library on one machine (experiments/load/). When one machine
cannot generate enough load, run this file with Locust's master and workers instead (compose's
`locust` profile, or `locust -f docker/locustfile.py --worker --master-host=<master>` on other
machines): each user posts Pooch Predictor requests to TF Serving's REST API of --host (the
balancer), drawn from the model's seeded pupdate generator, and checks every answer.

Settings (environment): POOCHLAB_MODEL (pooch_predictor), POOCHLAB_INSTANCES (rows per request,
1), POOCHLAB_SEED (0).
"""

from __future__ import annotations

import json
import os
import random

from locust import FastHttpUser, constant, task

from poochlab.models.facts import generate_pupdates

MODEL = os.environ.get("POOCHLAB_MODEL", "pooch_predictor")
INSTANCES = int(os.environ.get("POOCHLAB_INSTANCES", "1"))
SEED = int(os.environ.get("POOCHLAB_SEED", "0"))
_POOL = [p.signature_inputs() for p in generate_pupdates(2_000, SEED)]


class TFServingRestUser(FastHttpUser):
    """A closed-loop user: next request as soon as the last one is answered."""

    wait_time = constant(0)

    def on_start(self) -> None:
        # Each user its own seeded stream, so runs repeat and users do not move in lockstep.
        self.random = random.Random(f"{SEED}:{id(self)}")

    @task
    def predict(self) -> None:
        body = {"instances": self.random.sample(_POOL, INSTANCES)}
        with self.client.post(f"/v1/models/{MODEL}:predict", data=json.dumps(body),
                              headers={"Content-Type": "application/json"},
                              name=f"{MODEL}:predict", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            predictions = response.json().get("predictions")
            if not isinstance(predictions, list) or len(predictions) != INSTANCES:
                response.failure(f"expected {INSTANCES} predictions, got {str(predictions)[:200]}")
            else:
                response.success()
