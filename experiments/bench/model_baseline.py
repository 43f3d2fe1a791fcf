"""``bench server``'s (a): the model-call baseline, measured in a pinned child process.

What the model alone costs, with no server around it (not to be confused with the load
generator's floor of ``load/generator_floor.py``, which is the client path against an echo
server). The Pooch Predictor's ``serving_default`` called in-process (batch 1) through the same session
call the lab server makes (Session::Run on the caller's thread): p50 with one caller, CPU per
call with :data:`LOAD_CALLERS` threads calling. :func:`model_call` is also the call the echo +
model servers (``echo_servers.py``) make per request.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from poochlab.experiments.bench.server_results import LOAD_CALLERS, Row
from poochlab.processes.lifecycle import ManagedProcess

if TYPE_CHECKING:
    from poochlab.experiments.recording.placement import Placement

START_TIMEOUT_S = 300.0  # loading TensorFlow and the model, as long as the lab server gets
PUPDATE = {"hashtags": "#corgi #adorable #puppy", "country": "GB", "followers": 1200}


def model_call(base_path: str) -> Callable[[], object]:
    """The latest version's ``serving_default`` called on :data:`PUPDATE`, warmed up: the one
    call that the baseline (a) and the echo + model call servers (b) both time, and the one the
    lab server makes (:class:`~poochlab.serving.servable.Servable`)."""
    import numpy as np

    from poochlab.serving.model_manager import version_folders
    from poochlab.serving.servable import Servable

    folders = version_folders(base_path)
    if not folders:
        raise SystemExit(f"no model version under {base_path} (expected <base>/<version>/saved_model.pb)")
    version = max(folders)  # read from the folder found: its name may carry leading zeros
    signature = Servable("pooch_predictor", version, folders[version]).signature("serving_default")
    inputs = {
        "hashtags": np.array([str(PUPDATE["hashtags"]).encode()], dtype=object),
        "country": np.array([str(PUPDATE["country"]).encode()], dtype=object),
        "followers": np.array([PUPDATE["followers"]], dtype=np.int64),
    }
    for _ in range(50):  # the first calls build TensorFlow's kernels
        signature.compute(inputs)
    return lambda: signature.compute(inputs)


def model_baseline_main(base_path: str, calls: int, seconds: float) -> None:
    """Child process: for each line on stdin, print JSON with the signature's p50 (one caller)
    and its CPU per call with 8 threads calling."""
    from poochlab.experiments.drivers.grpc_calls import closed_loop
    from poochlab.experiments.recording.histograms import histogram_of, percentile_us

    call = model_call(base_path)
    print("ready", flush=True)
    for _ in sys.stdin:
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1e6)
        before = os.times()
        completed = closed_loop(call, LOAD_CALLERS, seconds)
        after = os.times()
        cpu = (after.user - before.user) + (after.system - before.system)
        p50_us = percentile_us(histogram_of(samples), 50) or 0.0
        print(json.dumps({"p50_ms": p50_us / 1e3, "cpu_ms_per_call": cpu / completed * 1e3,
                          "calls_per_s": completed / seconds}), flush=True)


class ModelCallBaseline:
    """The child process (on the server's cores) that measures the model-call baseline once per
    round; :meth:`stop` ends it."""

    def __init__(self, placement: "Placement", base_path: Path, calls: int, seconds: float) -> None:
        code = (f"from poochlab.experiments.bench.model_baseline import model_baseline_main; "
                f"model_baseline_main({str(base_path)!r}, {calls}, {seconds})")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.process = ManagedProcess([sys.executable, "-c", code], name="model-call baseline", env=env,
                                      capture=True, pipes=True, grace_s=15.0)
        with placement.as_role("server"):  # the child inherits the server's cores
            self.process.start()
        ready = self.process.read_line(START_TIMEOUT_S, what="its ready line")
        if ready != "ready":
            self.process.stop()
            raise RuntimeError(f"the model-call baseline process wrote {ready!r} instead of 'ready'")

    def measure(self) -> Row:
        self.process.write_line("go")
        result = json.loads(self.process.read_line(what="a measurement"))  # as long as it measures
        return Row("(a) model compute, in-process signature call", result["p50_ms"], result["cpu_ms_per_call"],
                   result["calls_per_s"], "CPU per call with 8 threads calling")

    def stop(self) -> None:
        self.process.stop()
