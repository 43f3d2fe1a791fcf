"""The grpcio calls driver: pre-serialized PredictRequest bytes on a raw grpcio channel, in this
process, from one caller (sequential calls, each timed) or several threads (a closed loop).

No protobuf work per call (the channel has no serializers: bytes in, bytes out), so what it
measures is the server and the round trip. One caller also reads each answer's ``server-timing``
trailer (the lab server's own compute) into the window's server-compute histogram. The bare loop
in a process of its own is ``grpc_loop.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from poochlab.experiments.drivers.interface import DriverError, LoadRun, one_window
from poochlab.experiments.recording.histograms import histogram_of

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
WARMUP_CALLS = 100


def closed_loop(call: Callable[[], Any], threads: int, seconds: float) -> int:
    """``call`` back to back from ``threads`` threads for ``seconds``; how many calls completed
    (a call returning False failed and is not counted)."""
    counts = [0] * threads
    stop = threading.Event()

    def worker(index: int) -> None:
        while not stop.is_set():
            if call() is not False:
                counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    return sum(counts)


@dataclass(frozen=True)
class GrpcCallsDriver:
    """``callers == 1``: ``calls`` sequential calls after a warm-up, each latency recorded.
    ``callers > 1``: a closed loop from that many threads for ``seconds``, counting completed
    calls (the run's histogram is empty: it exists to load a server whose CPU a bench reads)."""

    target: str
    payload: bytes
    callers: int = 1
    calls: int = 2000
    seconds: float = 5.0

    def run(self) -> LoadRun:
        return self._sequential() if self.callers == 1 else self._loop()

    def _sequential(self) -> LoadRun:
        import grpc

        from poochlab.clients.server_timing import server_timing_from_metadata

        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(PREDICT_METHOD)
            for _ in range(WARMUP_CALLS):
                call(self.payload, timeout=30)
            samples, computes = [], []
            started_run = time.monotonic()
            for _ in range(self.calls):
                started = time.perf_counter()
                _, rpc = call.with_call(self.payload, timeout=30)
                samples.append((time.perf_counter() - started) * 1e6)
                compute_us = server_timing_from_metadata(rpc.trailing_metadata())[1]
                if compute_us is not None:
                    computes.append(compute_us)
            wall = time.monotonic() - started_run
        return LoadRun(one_window(histogram_of(samples), len(samples),
                                  server_compute=histogram_of(computes) if computes else None), wall)

    def _loop(self) -> LoadRun:
        import grpc

        failures: list[str] = []
        started = time.monotonic()
        with grpc.insecure_channel(self.target) as channel:
            call = channel.unary_unary(PREDICT_METHOD)

            def predict() -> bool:
                try:
                    call(self.payload, timeout=30)
                    return True
                except grpc.RpcError as error:
                    failures.append(f"{error.code().name}: {error.details()}")
                    return False

            completed = closed_loop(predict, self.callers, self.seconds)
        if failures:
            raise DriverError(f"{len(failures)} failed calls at {self.target}, first: {failures[0]}")
        return LoadRun(one_window(histogram_of(()), completed), time.monotonic() - started)
