"""``measure_trial``: warm-up, measurement windows until stable, and a filled TrialRecord.

The calling process (the sweep runner) is never monkey-patched: the load runs in
``settings.workers`` generator processes (:mod:`~poochlab.experiments.load.worker`), each a
headless Locust with its own recorder. This process tells them when to start, merges each
window across workers as it arrives, applies the stability rule, stops them, and meanwhile
watches resources (server, workers, Redis), CPU steal and the server's Prometheus metrics.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable

from poochlab.clients.config import ClientConfig
from poochlab.experiments.faults.phases import summarize as summarize_faults
from poochlab.experiments.faults.trial import FaultTrial
from poochlab.experiments.load.settings import LoadSettings
from poochlab.experiments.load.worker_messages import Failed, Finished, Go, Ready, Stop, WindowClosed
from poochlab.experiments.load.worker_spec import SENDS_ON_GREENLETS, SENDS_ON_THREADS, WorkerSpec, sends_on_threads
from poochlab.experiments.load.workload import Workload
from poochlab.experiments.recording import health as health_rules
from poochlab.experiments.recording.arms import merged_arms
from poochlab.experiments.recording.health import CpuTimes, steal_percent
from poochlab.experiments.recording.histograms import decode, merge_encoded
from poochlab.experiments.recording.merge import merge_window_data, merged_histogram_text
from poochlab.experiments.recording.placement import plan_and_pin
from poochlab.experiments.recording.prometheus import histogram_deltas, scrape
from poochlab.experiments.recording.resources import ResourceMonitor
from poochlab.experiments.recording.stability import STABLE_WINDOWS, WindowSummary, is_stable
from poochlab.experiments.recording.stability import judge as judge_stability
from poochlab.experiments.recording.stability import p99_support
from poochlab.experiments.recording.verdict import TrialEvidence, judge
from poochlab.experiments.recording.windows import SHED_KINDS, WindowData
from poochlab.experiments.records import (CacheCounts, GeneratorHealth, LoadRecord, ResourcesRecord,
                                          ServerMetricsRecord, TrialRecord, Validity, Window)
from poochlab.processes.lifecycle import ManagedProcess

READY_TIMEOUT_S = 180.0  # a gRPC worker imports TensorFlow (~7 s alone, more on a busy box)
START_DELAY_S = 0.2  # between 'go' and the first request, so every worker starts together


class TrialError(RuntimeError):
    """A generator process failed; the message carries its traceback."""


@dataclass
class _Worker:
    index: int
    process: ManagedProcess
    conn: Connection
    stderr_path: str
    pid: int = 0
    final: Finished | None = None

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, errors="replace") as handle:
                return handle.read()[-2000:]
        except OSError:
            return ""


def _start_worker(spec: WorkerSpec) -> _Worker:
    ours, theirs = socket.socketpair()
    ours.setblocking(True)
    stderr = tempfile.NamedTemporaryFile(prefix=f"poochlab-worker{spec.index}-", suffix=".log", delete=False)
    process = ManagedProcess(
        [sys.executable, "-m", "poochlab.experiments.load.worker", str(theirs.fileno()),
         SENDS_ON_THREADS if sends_on_threads(spec.client, spec.settings.mode == "closed") else SENDS_ON_GREENLETS],
        name=f"load generator worker {spec.index}", pass_fds=[theirs.fileno()], log_path=Path(stderr.name),
        log_stdout=False, env=os.environ.copy()).start()
    theirs.close()
    stderr.close()
    conn = Connection(ours.detach())
    conn.send_bytes(pickle.dumps(spec))
    return _Worker(spec.index, process, conn, stderr.name)


def _receive(worker: _Worker) -> Ready | WindowClosed | Finished:
    try:
        message = worker.conn.recv()
    except (EOFError, OSError):
        raise TrialError(f"load generator worker {worker.index} died:\n{worker.stderr_tail()}") from None
    if isinstance(message, Failed):
        raise TrialError(f"load generator worker {worker.index} failed:\n{message.traceback}")
    if not isinstance(message, (Ready, WindowClosed, Finished)):
        raise TrialError(f"load generator worker {worker.index} sent an unknown message: {message!r}")
    return message


@dataclass
class _Collected:
    windows: dict[int, dict[int, WindowData]] = field(default_factory=dict)  # index -> worker -> data
    merged: list[WindowData] = field(default_factory=list)
    summaries: list[WindowSummary] = field(default_factory=list)
    # last window index of a stable run of windows in which the generator was held up -> why
    late_windows: dict[int, str] = field(default_factory=dict)


def generator_stalled(windows: list[WindowData]) -> str | None:
    """Why the generator was held up in these windows (None: it was not).

    The verdict's own loop-lag and lateness rules (health.health_reasons), on the windows pooled:
    a trial measures on past windows in which the host kept the generator from running, rather
    than end on them.
    """
    health: dict[str, float] = {}
    lag = merge_encoded(w.loop_lag_histogram for w in windows)
    if lag.get_total_count():
        health["loop_lag_p99_us"] = float(lag.get_value_at_percentile(99))
    lateness = merge_encoded(w.lateness_histogram for w in windows)
    if lateness.get_total_count():  # a closed loop has no schedule to be late for
        health["lateness_p99_us"] = float(lateness.get_value_at_percentile(99))
    latency = merge_encoded(w.histogram for w in windows)
    p99 = float(latency.get_value_at_percentile(99)) if latency.get_total_count() else None
    return "; ".join(health_rules.health_reasons(health, p99)) or None


def measure_trial(settings: LoadSettings, client: ClientConfig, workload: Workload, record: TrialRecord, *,
                  server_pid: int | None = None, metrics_url: str | None = None,
                  redis_pid: int | None = None, progress: Callable[[dict[str, Any]], None] | None = None,
                  faults: FaultTrial | None = None, _record_requests: bool = True) -> TrialRecord:
    """Run warm-up plus measurement windows against ``client``'s server and fill ``record``.

    Fills: started_at/ended_at, load, windows (each window merged over workers; requests still
    answered after the end are added to the last one), stable and stable_windows, errors_by_kind
    (outstanding requests counted as "timeout"), outstanding_at_end, lateness and server timing
    histograms, client_timing_us means, cache, answer_paths, server_metrics (Prometheus deltas
    when ``metrics_url`` is given), resources, generator health and validity. A generator that
    fails marks the record ``status="failed"`` with the reason instead of raising.

    ``faults``: a trial with scheduled faults (experiments/faults/trial.py): started at the
    measurement start, its windows kept out of the result and judged apart; fills ``faults``,
    ``fault_summary`` and each window's ``fault``.
    """
    record.started_at = _now_iso()
    record.load = LoadRecord.from_dict({**settings.as_record(), "client": _describe_client(client),
                                        "workload": workload.describe()})
    prefill = client.cache is not None and workload.cache_hit_ratio is not None
    workers = [_start_worker(WorkerSpec(i, settings, client, workload, prefill=prefill and i == 0,
                                        record=_record_requests))
               for i in range(settings.workers)]
    placement = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in workers:
            if not worker.conn.poll(max(deadline - time.monotonic(), 0.0)):
                raise TrialError(f"load generator worker {worker.index} not ready after {READY_TIMEOUT_S:.0f} s:\n"
                                 f"{worker.stderr_tail()}")
            ready = _receive(worker)
            if not isinstance(ready, Ready):
                raise TrialError(f"load generator worker {worker.index} sent {ready!r} before it was ready")
            worker.pid = ready.pid
        placement = plan_and_pin(server_pid, [w.pid for w in workers], redis_pid, enabled=settings.pin_cpus)
        start_at = time.monotonic() + START_DELAY_S
        measure_start = start_at + settings.warmup_s
        for worker in workers:
            worker.conn.send(Go(start_at, measure_start))
        if faults is not None:
            faults.start(measure_start)
        collected, measured = _measure(settings, workers, measure_start, server_pid, redis_pid,
                                       metrics_url, progress, faults)
    except TrialError as error:
        record.status = "failed"
        record.failure_reason = str(error)
        record.validity.invalidate(f"trial failed: {str(error).splitlines()[0]}", "failed")
        record.ended_at = _now_iso()
        return record
    finally:
        if faults is not None:
            faults.finish()  # never leave a fault planted (Redis down, a slow model)
        for worker in workers:
            worker.process.stop(10, sigterm=False)  # told to stop over its connection; SIGKILL if it hangs
            worker.conn.close()
            os.unlink(worker.stderr_path)
        if placement is not None:
            placement.restore()
    assert placement is not None  # set before measuring; a failure before it returned above
    _fill_record(record, settings, workers, collected, measured, placement.as_record(), workload.cache_hit_ratio,
                 faults)
    record.ended_at = _now_iso()
    return record


def _measure(settings: LoadSettings, workers: list[_Worker], measure_start: float, server_pid: int | None,
             redis_pid: int | None, metrics_url: str | None,
             progress: Callable[[dict[str, Any]], None] | None,
             faults: FaultTrial | None = None) -> tuple[_Collected, dict[str, Any]]:
    monitor = ResourceMonitor(server_pid, [w.pid for w in workers], redis_pid)
    measured: dict[str, Any] = {}
    time.sleep(max(measure_start - time.monotonic(), 0.0))
    before_metrics = _scrape_or_note(metrics_url, measured, "before")
    cpu_before = CpuTimes.read()
    monitor.start(time.monotonic())
    collected = _Collected()
    next_index = 0
    last_index: int | None = None
    limit = measure_start + (settings.max_windows + 2) * settings.window_s + 30.0
    while last_index is None:
        ready = wait([w.conn for w in workers], timeout=0.1)
        monitor.sample()
        for worker in workers:
            if worker.conn in ready:
                message = _receive(worker)
                if isinstance(message, WindowClosed):
                    collected.windows.setdefault(message.window.index, {})[worker.index] = message.window
            elif worker.process.poll() is not None:
                raise TrialError(f"load generator worker {worker.index} exited:\n{worker.stderr_tail()}")
        while len(collected.windows.get(next_index, {})) == len(workers):
            merged = merge_window_data(list(collected.windows[next_index].values()))
            collected.merged.append(merged)
            summary = _summary(merged, settings.window_s)
            collected.summaries.append(summary)
            count = next_index + 1
            stable = count >= settings.min_windows and is_stable(collected.summaries)
            if stable and (late := generator_stalled(collected.merged[-STABLE_WINDOWS:])) is not None:
                # The host took the generator's CPU (steal, a neighbour): these windows cannot be
                # the result, so measuring goes on until three on-time windows agree.
                stable = False
                collected.late_windows[next_index] = late
            if progress is not None:
                errors = sum(merged.errors_by_kind.values())
                queue = decode(merged.server_queue_histogram) if merged.server_queue_histogram else None
                progress({"window": next_index, "throughput_rps": summary.throughput_rps,
                          "p99_us": summary.p99_us, "errors": errors, "stable": stable,
                          "server_queue_p99_us": float(queue.get_value_at_percentile(99)) if queue else None,
                          "problem": _window_problem(settings, merged, summary, errors)})
            if settings.rate_schedule is not None or settings.users_schedule is not None:  # changes on purpose
                stable = False
            if faults is not None:  # a fault trial ends once its faults are over, never at stability
                stable = False
                limit = max(limit, time.monotonic() + 2 * settings.window_s + 30.0)
            if (faults.may_end(count * settings.window_s) and count >= settings.max_windows if faults is not None
                    else stable or count >= settings.max_windows):
                last_index = next_index
                break
            next_index += 1
        if time.monotonic() > limit:
            raise TrialError("no measurement windows arrived from the load generator in time")
    for worker in workers:
        worker.conn.send(Stop(last_index))
    measure_end = measure_start + (last_index + 1) * settings.window_s
    for worker in workers:
        if not worker.conn.poll(settings.drain_s + 30.0):
            raise TrialError(f"load generator worker {worker.index} did not finish:\n{worker.stderr_tail()}")
        while True:
            message = _receive(worker)
            if isinstance(message, Finished):
                worker.final = message
                break
    measured["resources"] = monitor.stop(time.monotonic())
    measured["resources"].measured_s = measure_end - measure_start
    measured["steal_percent"] = steal_percent(cpu_before, CpuTimes.read())
    after_metrics = _scrape_or_note(metrics_url, measured, "after")
    if before_metrics is not None and after_metrics is not None:
        measured["server_metrics"] = histogram_deltas(before_metrics, after_metrics)
    return collected, measured


def _window_problem(settings: LoadSettings, merged: WindowData, summary: WindowSummary, errors: int) -> str | None:
    """What already looks wrong in one window, for the live progress line (the verdict at the
    end decides; this only lets a user stop a doomed sweep early)."""
    problems = []
    if merged.lateness_histogram:
        lateness = decode(merged.lateness_histogram)
        late_p99 = lateness.get_value_at_percentile(99) if lateness.get_total_count() else 0
        if late_p99 > health_rules.lateness_limit_us(summary.p99_us):
            problems.append(f"sends late (p99 {late_p99 / 1000:.1f} ms): generator-limited")
    attempts = merged.requests + errors
    if attempts and errors / attempts > health_rules.MAX_ERROR_FRACTION:
        problems.append(f"{100 * errors / attempts:.0f}% errors")
    planned = settings.planned_rate_rps(merged.index * settings.window_s, (merged.index + 1) * settings.window_s)
    if planned and summary.throughput_rps < 0.9 * planned:
        problems.append(f"answering {summary.throughput_rps:.0f} of {planned:.0f} req/s")
    return "; ".join(problems) or None


def _scrape_or_note(url: str | None, measured: dict[str, Any], when: str) -> Any:
    if url is None:
        return None
    try:
        return scrape(url)
    except (OSError, ValueError) as error:
        measured.setdefault("metrics_errors", []).append(f"{when}: {url}: {error}")
        return None


def _fill_record(record: TrialRecord, settings: LoadSettings, workers: list[_Worker], collected: _Collected,
                 measured: dict[str, Any], placement: dict[str, Any], planned_hit_ratio: float | None,
                 faults: FaultTrial | None = None) -> None:
    merged = list(collected.merged)
    last = len(merged) - 1
    finals = [w.final for w in workers if w.final is not None]
    tails = [f.tail for f in finals if f.tail is not None]
    if tails and last >= 0:
        merged[last] = merge_window_data([merged[last], *[_reindex(t, last) for t in tails]])
    record.windows = [
        Window(index=w.index, start_s=w.index * settings.window_s, duration_s=settings.window_s,
               requests=w.requests, errors=sum(w.errors_by_kind.values()), histogram=w.histogram,
               corrected_histogram=w.corrected_histogram, answer_paths=dict(w.answer_paths),
               cache_counts=dict(w.cache_counts), cache_errors_by_reason=dict(w.cache_errors_by_reason),
               breaker_counts=dict(w.breaker_counts),
               planned_rate_rps=settings.planned_rate_rps(w.index * settings.window_s, (w.index + 1) * settings.window_s))
        for w in merged]
    in_faults: set[int] = set()
    if faults is not None:
        record.fault_summary, in_faults, record.faults = summarize_faults(
            record.windows, faults.finish(), faults.slo_ms, {w.index: w.errors_by_kind for w in merged})
        for window in record.windows:
            window.fault = window.index in in_faults
    steady = [w for w in merged if w.index not in in_faults]
    verdict = judge_stability([s for s in collected.summaries if s.index not in in_faults])
    record.stable = len(steady) >= settings.min_windows and verdict.stable
    result = [w for w in steady if w.index in verdict.windows] if record.stable else steady
    record.stable_windows = [w.index for w in result]
    kept = set(record.stable_windows)
    # From the saved windows: the last one holds the answers that arrived after it closed.
    record.load.p99_support = p99_support([_summary(w, settings.window_s) for w in merged if w.index in kept])
    stability = (
        verdict.reason if record.stable
        else f"{verdict.reason}; after {len(merged)} windows of {settings.window_s:g} s (limit {settings.max_windows})")
    if collected.late_windows:
        passed = "; ".join(f"windows {i - STABLE_WINDOWS + 1}-{i} agreed but {why}"
                           for i, why in sorted(collected.late_windows.items()))
        stability += f"; measured on past a held-up generator: {passed}"
        record.load.late_windows = {str(i): why for i, why in sorted(collected.late_windows.items())}
    record.load.stability = stability

    outstanding = sum(f.outstanding for f in finals)
    errors: Counter = Counter()
    paths: Counter = Counter()
    sums: Counter = Counter()
    for data in merged:
        errors.update(data.errors_by_kind)
    for data in result:
        paths.update(data.answer_paths)
        sums.update(data.client_timing_sums_us)
    if outstanding:
        errors["timeout"] += outstanding
    record.errors_by_kind = dict(errors)
    record.outstanding_at_end = outstanding
    record.answer_paths = dict(paths)
    record.arms = merged_arms(result)  # an A/B test's arms (recording/arms.py); {} otherwise
    answered = sum(w.requests for w in result)
    record.client_timing_us = {k: v / answered for k, v in sums.items()} if answered else {}
    record.lateness_histogram = merged_histogram_text(w.lateness_histogram for w in result)
    record.server_queue_histogram = merged_histogram_text(w.server_queue_histogram for w in result)
    record.server_compute_histogram = merged_histogram_text(w.server_compute_histogram for w in result)
    caches = [f.cache for f in finals if f.cache is not None]
    record.cache = CacheCounts.total(caches) if caches else None
    record.server_metrics = ServerMetricsRecord(deltas=measured.get("server_metrics", {}),
                                                scrape_errors=measured.get("metrics_errors") or None)

    resources: ResourcesRecord = measured["resources"]
    resources.steal_percent = measured.get("steal_percent")
    resources.placement = placement
    record.resources = resources

    latency = merge_encoded(w.histogram for w in result)
    p99 = float(latency.get_value_at_percentile(99)) if latency.get_total_count() else None
    lag = merge_encoded(w.loop_lag_histogram for w in result)
    generator = GeneratorHealth(
        worker_cpu_percent=resources.generator_cpu_percent or [],
        loop_lag_p99_us=float(lag.get_value_at_percentile(99)) if lag.get_total_count() else None,
        loop_lag_max_us=float(lag.get_max_value()) if lag.get_total_count() else None,
        steal_percent=measured.get("steal_percent"),
        timer=finals[0].timer if finals else None,
        expected_interval_us=finals[0].expected_interval_us if finals else None,
        sender_greenlets=sum(f.sender_greenlets for f in finals),
    )
    if record.lateness_histogram:
        lateness = decode(record.lateness_histogram)
        total = lateness.get_total_count()
        late = _count_above(lateness, health_rules.LATE_SEND_US)
        generator.lateness_p50_us = float(lateness.get_value_at_percentile(50))
        generator.lateness_p99_us = float(lateness.get_value_at_percentile(99))
        generator.late_send_fraction = late / total if total else 0.0
    record.generator = generator
    # Refusals inside a fault (a killed replica's UNAVAILABLE, a crash's 503) are not shedding.
    record.shed = _shed_summary([w for w in merged if w.index not in in_faults])
    _judge(record, settings, generator, p99, result, float(resources.measured_s or 0.0),
           planned_hit_ratio, [w for w in merged if w.index in in_faults] if faults is not None else None)


def _shed_summary(windows: list[WindowData]) -> dict[str, Any]:
    """Refusals (SHED_KINDS) over every window: how many, their share of attempts, and how fast
    they came back next to the answers (p50/p99 from merged histograms, microseconds)."""
    refused = sum(n for w in windows for kind, n in w.errors_by_kind.items() if kind in SHED_KINDS)
    if not refused:
        return {}
    attempts = sum(w.requests + sum(w.errors_by_kind.values()) for w in windows)
    refusals = merge_encoded(w.refusal_histogram for w in windows)
    answers = merge_encoded(w.histogram for w in windows)
    summary: dict[str, Any] = {"requests": refused, "share": refused / attempts if attempts else 0.0,
                               "refusal_p50_us": float(refusals.get_value_at_percentile(50)),
                               "refusal_p99_us": float(refusals.get_value_at_percentile(99))}
    if answers.get_total_count():
        summary.update(answer_p50_us=float(answers.get_value_at_percentile(50)),
                       answer_p99_us=float(answers.get_value_at_percentile(99)))
    return summary


def _summary(window: WindowData, window_s: float) -> WindowSummary:
    """A merged window as the stability rule reads it."""
    return WindowSummary(window.index, window.requests, window_s, decode(window.histogram), window.slowest,
                         window.slowest_complete_above_us)


def _count_above(histogram: Any, threshold_us: int) -> int:
    return sum(item.count_added_in_this_iter_step for item in histogram.get_recorded_iterator()
               if item.value_iterated_to > threshold_us)


def _judge(record: TrialRecord, settings: LoadSettings, generator: GeneratorHealth, p99: float | None,
           result: list[WindowData], measured_s: float, planned_hit_ratio: float | None,
           fault_windows: list[WindowData] | None = None) -> None:
    corrected = merge_encoded(w.corrected_histogram for w in result)
    answered = sum(w.requests for w in record.windows)
    outside: dict[str, Any] = {}
    if fault_windows is not None:  # errors inside a scheduled fault's windows are findings
        inside: Counter = Counter()
        for window in fault_windows:
            inside.update(window.errors_by_kind)
        outside = dict(
            errors_outside_faults={k: n - inside.get(k, 0) for k, n in record.errors_by_kind.items()},
            answered_outside_faults=answered - sum(w.requests for w in fault_windows),
            measured_outside_faults_s=max(measured_s - len(fault_windows) * settings.window_s, 0.0),
            redis_outage=any(e.get("kind") == "redis_outage" and e.get("injected_at_s") is not None
                             for e in record.faults))
    evidence = TrialEvidence(
        mode=settings.mode, answered=answered, errors_by_kind=record.errors_by_kind, measured_s=measured_s,
        generator=generator.to_dict(), p99_us=p99,
        planned_rate_rps=settings.planned_rate_rps(0.0, measured_s) if settings.mode == "open" and measured_s > 0 else None,
        window_rates=tuple((w.index, w.planned_rate_rps, w.requests / w.duration_s) for w in record.windows
                           if w.planned_rate_rps and not w.fault) if settings.rate_schedule is not None else (),
        corrected_p99_us=float(corrected.get_value_at_percentile(99)) if corrected.get_total_count() else None,
        cache=record.cache,
        planned_hit_ratio=planned_hit_ratio if record.cache is not None else None,
        stability_note=None if record.stable else record.load.stability, **outside)
    record.validity = judge(evidence, record.validity if isinstance(record.validity, Validity) else None)


def _reindex(data: WindowData, index: int) -> WindowData:
    return WindowData(**{**asdict(data), "index": index})


def _describe_client(client: ClientConfig) -> dict[str, Any]:
    try:
        described = asdict(client)
    except TypeError:
        return {"repr": repr(client)}
    described["library"] = getattr(client, "resolved_library", described.get("library"))
    return {k: (str(v) if not isinstance(v, (int, float, str, bool, dict, list, type(None))) else v)
            for k, v in described.items()}


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
