"""The reference gRPC clients: a bare blocking call loop, in a process of its own.

One pre-encoded PredictRequest, one channel, ``call(body)`` back to back (or paced on a Poisson
schedule) for ``seconds`` after a warm-up; every latency (``time.monotonic`` around the call) goes
into an HdrHistogram. No decode, no gevent, no threads: the least a Python gRPC client does per request, so the lab's
gRPC path is judged against it. ``wire``: "grpcio" (a grpcio channel) or "lean" (the lab's own
HTTP/2 wire, clients/grpc_wire.py, one connection). Run it as
``python -m poochlab.experiments.drivers.grpc_loop <target> <seconds> [<rate> [<wire>]]``; it prints one JSON line
(``histogram`` as hdrh text, ``requests``, ``cpu_s``, ``wall_s``). It inherits the caller's CPU
affinity and priority, so a benchmark pins it like the lab's generator. :class:`GrpcLoopDriver`
is the loop behind the load-driver interface (``interface.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from poochlab.experiments.drivers.interface import DriverError, LoadRun, one_window

WARMUP_CALLS = 300


def one_request_body() -> bytes:
    """The PredictRequest of one fixed pupdate (seed 3), as the lab's gRPC client encodes it."""
    from poochlab.clients.config import ClientConfig
    from poochlab.clients.grpc_predictor import GrpcPredictor
    from poochlab.models.facts import generate_pupdates
    from poochlab.models.pupdate import prediction_inputs

    predictor = GrpcPredictor(ClientConfig(protocol="grpc"))
    return predictor.encode_request([prediction_inputs(generate_pupdates(1, seed=3)[0])])


def call_loop(target: str, seconds: float, rate_rps: float | None = None,
              wire: str = "grpcio") -> dict[str, Any]:
    """Back to back, or with ``rate_rps`` on a seeded Poisson schedule (one thread: a call that
    overruns the next scheduled time makes that one late; latency counts from the schedule)."""
    import random

    from poochlab.clients.grpc_predictor import PREDICT_METHOD
    from poochlab.experiments.recording.histograms import clamp_us, encode, new_histogram

    body = one_request_body()
    if wire == "lean":
        from poochlab.clients import grpc_wire

        connection = grpc_wire.Connection(*grpc_wire.address(target), 10.0)
        headers = grpc_wire.request_headers(PREDICT_METHOD, target)

        def call(body: bytes, timeout: float) -> Any:
            return connection.unary(headers, body, timeout)

        close = connection.close
    else:
        import grpc

        channel = grpc.insecure_channel(target)
        call = channel.unary_unary(PREDICT_METHOD)
        close = channel.close
    for _ in range(WARMUP_CALLS):
        call(body, timeout=10)
    histogram = new_histogram()
    clock = time.monotonic
    cpu_start, start = time.process_time(), clock()
    end_at = start + seconds
    requests = 0
    now = scheduled = start
    rng = random.Random(0)
    while now < end_at:
        if rate_rps:
            scheduled += rng.expovariate(rate_rps)
            delay = scheduled - clock()
            if delay > 0:
                time.sleep(delay)
            sent = scheduled
        else:
            sent = clock()
        call(body, timeout=10)
        now = clock()
        histogram.record_value(clamp_us((now - sent) * 1e6))
        requests += 1
    close()
    return {"histogram": encode(histogram), "requests": requests, "cpu_s": time.process_time() - cpu_start,
            "wall_s": now - start}


def run_call_loop(target: str, seconds: float, rate_rps: float | None = None,
                  wire: str = "grpcio") -> dict[str, Any]:
    """Run the loop in a fresh process (inheriting this one's affinity) and return its result."""
    command = [sys.executable, "-m", "poochlab.experiments.drivers.grpc_loop", target, str(seconds),
               str(rate_rps or 0), wire]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0 or not done.stdout.strip():
        raise DriverError(f"bare {wire} loop against {target} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class GrpcLoopDriver:
    """The bare loop against ``target`` for ``seconds``, back to back or paced at ``rate_rps``."""

    target: str
    seconds: float
    rate_rps: float | None = None
    wire: str = "grpcio"

    def run(self) -> LoadRun:
        from poochlab.experiments.recording.histograms import decode

        result = run_call_loop(self.target, self.seconds, self.rate_rps, self.wire)
        return LoadRun(one_window(decode(result["histogram"]), int(result["requests"])), float(result["wall_s"]),
                       float(result["cpu_s"]))


if __name__ == "__main__":
    rate = float(sys.argv[3]) if len(sys.argv) > 3 and float(sys.argv[3]) > 0 else None
    wire = sys.argv[4] if len(sys.argv) > 4 else "grpcio"
    print(json.dumps(call_loop(sys.argv[1], float(sys.argv[2]), rate, wire)))
