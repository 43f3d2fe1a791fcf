"""One load-generator process: Locust (headless, local runner) plus the recorder.

Started by :mod:`~poochlab.experiments.load.trial` as ``python -m
poochlab.experiments.load.worker <fd> threads|greenlets``, so gevent patches before anything else
is imported (threads too, unless the trial process said this worker sends on OS threads) and gRPC
channels are made in this process (never inherited through a fork). Plain gRPC goes out on OS threads
(``thread_sender``), everything else on greenlets (``sender``). It talks to the trial process
over a socket with pickled messages (frozen dataclasses, :mod:`~poochlab.experiments.load.worker_messages`):

  worker -> trial: Ready, WindowClosed (one per window), Finished, or Failed (a traceback)
  trial -> worker: Go, Stop
"""

import os
import sys

from gevent import monkey

# worker_spec.SENDS_ON_THREADS, which cannot be imported before the patch below.
THREADS_ARGUMENT = "threads"

# Patch before anything else is imported: a lock or event made by a module imported earlier
# stays an OS primitive, and a greenlet waiting on it stalls the whole hub (sends go out late).
# The gRPC thread path keeps OS threads, locks and sockets: grpcio stalls on gevent locks
# contended between OS threads, and its cache client (redis-py) shares pooled connections
# between the sending threads, which a gevent socket (bound to one thread's hub) cannot be.
# Every other path patches everything (the lean client, redis-py, the cache, requests).
if sys.argv[2:3] == [THREADS_ARGUMENT]:
    monkey.patch_all(thread=False, socket=False, select=False, ssl=False, dns=False)
else:
    monkey.patch_all()
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"  # Locust would patch threads on import

import gc  # noqa: E402
import pickle  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from gevent.socket import wait_read  # noqa: E402

from poochlab.experiments.load.worker_messages import (  # noqa: E402
    Failed, Finished, Go, Ready, Stop, ToWorker, WindowClosed)
from poochlab.experiments.load.worker_spec import (  # noqa: E402
    PLANT_BURNER_ENV, PLANT_STALL_ENV, WorkerSpec, sends_on_threads)
from poochlab.experiments.records import CacheCounts  # noqa: E402

def _receive(conn: Connection, timeout: float | None) -> ToWorker | None:
    try:
        wait_read(conn.fileno(), timeout=timeout)
    except TimeoutError:  # socket.timeout is TimeoutError
        return None
    message = conn.recv()
    if not isinstance(message, (Go, Stop)):
        raise RuntimeError(f"worker: unexpected message from the trial process: {message!r}")
    return message


def _cache_counts(stats: dict[str, Any]) -> CacheCounts:
    return CacheCounts(hits=stats.get("cache_hits", 0), misses=stats.get("cache_misses", 0),
                       errors=stats.get("cache_errors", 0),
                       errors_by_reason=dict(stats.get("cache_errors_by_reason", {})))


def _breaker_counts(stats: dict[str, Any]) -> dict[str, int]:
    return {"opened": int(stats.get("breaker_opened", 0)), "probes": int(stats.get("breaker_probes", 0)),
            "closed": int(stats.get("breaker_closed", 0))}


def _burn(share: float) -> None:
    """A planted overloaded generator: busy for ``share`` of every 10 ms, without yielding."""
    while True:
        end = time.monotonic() + 0.010 * share
        while time.monotonic() < end:
            pass
        gevent.sleep(0.010 * (1 - share))


def _stall(plan: str, measure_start: float) -> None:
    """A planted stalled generator: the whole hub blocks (no greenlet runs), as when the host
    takes the CPU, for a while after the measurement starts."""
    stall_ms, every_ms, until_s = (float(part) for part in plan.split(","))
    blocking_sleep = monkey.get_original("time", "sleep")
    while time.monotonic() < measure_start + until_s:
        gevent.sleep(every_ms / 1000)
        if time.monotonic() >= measure_start:
            blocking_sleep(stall_ms / 1000)


CLOSED_LOOP_SWITCH_INTERVAL_S = 0.0005


def run(conn: Connection, spec: WorkerSpec) -> None:
    threaded = sends_on_threads(spec.client, spec.settings.mode == "closed")
    if threaded and spec.settings.mode == "closed":
        # A thread back from its call waits for the GIL while the hub closes a window (several
        # ms of Python), by default up to 5 ms: a closed loop's p99 showed it. Measured at
        # concurrency 1, 0.5 ms brought p50 and p99 nearer the bare loop's; in an open loop it
        # cost ~10% more CPU per request, so there the default stays.
        sys.setswitchinterval(CLOSED_LOOP_SWITCH_INTERVAL_S)
    if spec.client.protocol == "grpc" and spec.client.resolved_library == "grpcio" and not threaded:
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()
    from locust.env import Environment

    from poochlab.clients.factory import build_predictor
    from poochlab.clients.prediction import error_kind
    from poochlab.experiments.load.precise_timer import PreciseTimer
    from poochlab.experiments.load.rate_schedule import Arrivals
    from poochlab.experiments.load.sender import Sender
    from poochlab.experiments.load.thread_sender import ThreadSender
    from poochlab.experiments.load.users import user_class_for
    from poochlab.experiments.recording.arms import score_rows
    from poochlab.experiments.recording.windows import WindowRecorder

    settings = spec.settings
    users, rate = settings.share(spec.index)
    open_loop = settings.mode == "open"
    client = spec.client
    if client.ab is not None:  # each trial and worker draws its own arms (seeded)
        from dataclasses import replace

        client = replace(client, ab=replace(client.ab, seed=(client.ab.seed * 1_000_003 + settings.seed) * 1000 + spec.index))
    predictor = build_predictor(client)
    if spec.prefill:
        spec.workload.prefill(predictor)
    user_class = user_class_for(spec.client, settings.pacing)
    env = Environment(user_classes=[user_class])
    if settings.users_schedule is not None:
        env.stop_timeout = settings.drain_s + 30.0  # users leaving a step finish their request
    if open_loop:
        stream_base, stream_count = spec.index, settings.workers
    else:
        stream_base = sum(settings.share(w)[0] for w in range(spec.index))
        stream_count = settings.users
        if settings.users_schedule is not None:  # every user a step starts takes a fresh stream
            starts = [settings.users_schedule.user_starts(w, settings.workers) for w in range(settings.workers)]
            stream_base, stream_count = sum(starts[:spec.index]), sum(starts)
    # Everything built so far (the workload's pupdates, Locust, the clients) lives for the whole
    # trial: move it out of the collector's sight, so a full collection during the measurement
    # scans only what requests allocate (a gen-2 pass over the workload held the hub for ms).
    gc.collect()
    gc.freeze()
    conn.send(Ready(os.getpid()))

    go = _receive(conn, None)
    if not isinstance(go, Go):
        raise RuntimeError(f"worker {spec.index}: expected Go, got {go!r}")
    start_at, measure_start = go.start_at, go.measure_start
    sender_class = ThreadSender if threaded else Sender
    seed = settings.seed * 1000 + spec.index
    # A rate schedule: this worker's share of it, its 0 s at the measurement start.
    arrivals = None if settings.rate_schedule is None else Arrivals(
        settings.rate_schedule.scaled(1 / settings.workers), seed=seed, start_at=start_at, origin=measure_start)
    sender = sender_class(predictor, env.events, user_class.client_kind, spec.workload, open_loop=open_loop,
                    rate_rps=rate, seed=seed, stream_base=stream_base,
                    stream_count=stream_count, start_at=start_at, arrivals=arrivals)
    user_class.sender = sender
    expected = int(settings.pacing * 1e6) if settings.pacing > 0 else None
    recorder = WindowRecorder(measure_start, settings.window_s, open_loop=open_loop, expected_interval_us=expected,
                              cache_probe=(lambda: _cache_counts(predictor.stats())) if spec.client.cache else None,
                              breaker_probe=(lambda: _breaker_counts(predictor.stats())) if spec.client.fallback else None)

    def on_request(context: dict[str, Any], exception: BaseException | None, **_: Any) -> None:
        # Runs once per request on the generator's loop: positional arguments, no lookups twice.
        prediction = context["prediction"]
        if prediction is None:
            kind = None if exception is None else error_kind(exception)
            recorder.record(context["start"], context["end"], kind, context["lateness_s"],
                            arm=getattr(exception, "arm", None))
        elif prediction.arm is None:
            recorder.record(context["start"], context["end"], None, context["lateness_s"],
                            prediction.timing, prediction.path)
        else:  # an A/B test: latency and quality per arm
            recorder.record(context["start"], context["end"], None, context["lateness_s"],
                            prediction.timing, prediction.path, prediction.arm,
                            score_rows(context.get("request") or (), prediction.likes))

    def count_only(context: dict[str, Any], **_: Any) -> None:
        recorder.count(context["start"], context["end"])

    env.events.request.add_listener(on_request if spec.record else count_only)

    def sample_loop_lag() -> None:
        # A 10 ms timer on the precise clock: how late it fires is the loop's lag.
        timer = PreciseTimer()
        while True:
            due = time.monotonic() + 0.010
            timer.wait_until(due)
            recorder.record_loop_lag(due, time.monotonic() - due)

    start_timer = PreciseTimer()
    timer_kind = start_timer.kind
    start_timer.wait_until(start_at)
    if settings.users_schedule is not None:
        from poochlab.experiments.load.users import UsersShape

        env.shape_class = UsersShape(settings.users_schedule, measure_start, spec.index, settings.workers)
    runner = env.create_local_runner()
    if settings.users_schedule is not None:
        runner.start_shape()
    else:
        runner.start(1 if open_loop else users, spawn_rate=10_000)
    background = [gevent.spawn(sample_loop_lag)]
    burner_share = float(os.environ.get(PLANT_BURNER_ENV, "0") or 0)
    if burner_share > 0:
        background.append(gevent.spawn(_burn, burner_share))
    if os.environ.get(PLANT_STALL_ENV):
        background.append(gevent.spawn(_stall, os.environ[PLANT_STALL_ENV], measure_start))

    start_timer.wait_until(measure_start)
    start_timer.close()
    if not open_loop and expected is None:
        warm = recorder.warmup_latency
        if warm.get_total_count() >= 10:
            recorder.expected_interval_us = int(warm.get_value_at_percentile(50))
    cache_before = _cache_counts(predictor.stats())
    recorder.start_client_counts()

    window = 0
    while True:
        # Wake at the next window's end (to ship it even when no answer arrives) or on a message.
        message = _receive(conn, max(recorder.window_end(window) + 0.001 - time.monotonic(), 0.0))
        if isinstance(message, Stop):
            last_index = message.last_index
            break
        recorder.advance(time.monotonic())
        for closed in recorder.take_closed():
            conn.send(WindowClosed(closed))
            window = closed.index + 1

    recorder.stop_after(last_index)
    sender.stopping = True
    end_of_trial = recorder.window_end(last_index)
    deadline = time.monotonic() + settings.drain_s
    while sender.in_flight_started_before(end_of_trial) and time.monotonic() < deadline:
        gevent.sleep(0.005)
    outstanding = sender.in_flight_started_before(end_of_trial)
    cache_after = _cache_counts(predictor.stats())
    conn.send(Finished(
        tail=recorder.tail(),
        outstanding=outstanding,
        cache=cache_after.since(cache_before) if spec.client.cache else None,
        expected_interval_us=recorder.expected_interval_us,
        sender_greenlets=sender.sender_greenlets,
        sender_threads=getattr(sender, "sender_threads", 0),
        timer=timer_kind,
    ))
    for greenlet in background:
        greenlet.kill()
    runner.quit()
    if isinstance(sender, ThreadSender):  # the threaded path's sender: its threads end here
        sender.close()
    predictor.close()


def main(argv: list[str]) -> int:
    conn = Connection(int(argv[0]))
    try:
        spec = pickle.loads(conn.recv_bytes())
        threaded = sends_on_threads(spec.client, spec.settings.mode == "closed")
        if threaded != (argv[1:2] == [THREADS_ARGUMENT]):
            raise RuntimeError(f"worker {spec.index}: started as {argv[1:2]} but its client sends "
                               f"{'on threads' if threaded else 'on greenlets'}")
        run(conn, spec)
    except BaseException:
        try:
            conn.send(Failed(traceback.format_exc()))
        except OSError:
            pass
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
