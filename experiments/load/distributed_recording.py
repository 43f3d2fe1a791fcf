"""The lab's recording inside Locust's own runners: local, ``--processes N``, or master and workers.

A locustfile imports this module (``import poochlab.experiments.load.distributed_recording``);
importing it adds Locust event listeners and the ``--hdr-output`` option (also
``LOCUST_HDR_OUTPUT``). Locust's own statistics round latencies and are never reported; instead:

- every process that runs users takes each ``request`` event's unrounded latency (microseconds,
  in the HdrHistogram bucket it would land in: :func:`~poochlab.experiments.recording.windows.bucket_us`)
  per request name, and counts failures by kind (a failure's ``kind`` attribute, as
  ``PredictionError`` has, else ``client_<ExceptionType>``);
- a worker, on ``report_to_master`` (every 3 s and once more when it quits), encodes what it
  recorded since its last report into the report's data and starts afresh; the histograms ride
  in the same message as Locust's own counts, so both always cover the same requests;
- the master (or the single process in local mode) adds each report with ``decode_and_add``,
  keeps every report as one window of one worker, and on ``quitting`` writes the merged result
  to ``--hdr-output`` and prints p50/p90/p99/p99.9/max.

Nothing is built before Locust's ``init`` event, which fires after ``--processes`` forks, so
every process has state of its own. A new test run (``test_start``) starts a new recording,
as Locust's own statistics do. ``--hdr-warmup S`` (``LOCUST_HDR_WARMUP``) leaves requests that
started in the first S seconds of the run (on each worker's clock) out of the histograms; they
are counted as ``warmup_excluded``.

The file is JSON: ``aggregated`` and ``by_name`` hold ``count``, ``errors_by_kind``, ``summary``
(count, mean and the lab's percentiles in us) and the encoded merged ``histogram``; ``reports``
holds each worker report (``worker``, ``since``/``until`` wall-clock seconds, per name its
encoded histogram and error counts), so any window can be re-merged by hand.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from locust import events
from locust.runners import MasterRunner, WorkerRunner

from poochlab.clients.prediction import error_kind
from poochlab.experiments.load.worker_messages import NameReport, WorkerReport
from poochlab.experiments.records import HDR_HIGHEST_US, HDR_LOWEST_US, HDR_SIGNIFICANT_FIGURES
from poochlab.experiments.recording.histograms import decode, encode, new_histogram, summarize
from poochlab.experiments.recording.windows import bucket_us, histogram_text

# The key of the lab's part of a worker's report (Locust's own keys are "stats", "errors", ...).
REPORT_KEY = "poochlab_hdr"
OUTPUT_FORMAT = "poochlab-locust-hdr/1"
PRINTED_PERCENTILES = (50.0, 90.0, 99.0, 99.9)  # and the maximum


class _Pending:
    """What one process recorded since its last report: bucketed latency counts and errors, per name."""

    def __init__(self) -> None:
        self.since = time.time()
        self.latency: dict[str, dict[int, int]] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.warmup_excluded = 0

    def record(self, name: str, response_time_ms: float, exception: BaseException | None) -> None:
        if exception is not None:
            errors = self.errors.setdefault(name, {})
            kind = error_kind(exception)
            errors[kind] = errors.get(kind, 0) + 1
            return
        # A dict of bucket counts is cheaper per request than hdrh's record_value (same histogram).
        counts = self.latency.setdefault(name, {})
        value = bucket_us(response_time_ms / 1000.0)
        counts[value] = counts.get(value, 0) + 1

    def report(self) -> WorkerReport:
        """This window: per name an encoded histogram and error counts."""
        by_name = {name: NameReport(histogram_text(self.latency.get(name, {})), dict(self.errors.get(name, {})))
                   for name in sorted(set(self.latency) | set(self.errors))}
        return WorkerReport(since=self.since, until=time.time(), warmup_excluded=self.warmup_excluded,
                            by_name=by_name)


class _Merged:
    """Every report added so far (master, or the single process in local mode)."""

    def __init__(self) -> None:
        self.histograms: dict[str, Any] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.reports: list[dict[str, Any]] = []
        self.warmup_excluded = 0

    def add(self, worker: str, payload: Mapping[str, Any]) -> None:
        """Add one report (as it came over the wire); a malformed one raises ValueError naming
        the worker and adds nothing."""
        try:
            report = WorkerReport.from_wire(payload)
            parts = {name: (decode(part.histogram), part.errors_by_kind) for name, part in report.by_name.items()}
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"report {REPORT_KEY!r} from worker {worker}: {error}") from None
        for name, (histogram, errors) in parts.items():
            merged = self.histograms.get(name)
            if merged is None:  # a full-range histogram is ~190 KB: build one per name, not per report
                merged = self.histograms[name] = new_histogram()
            merged.add(histogram)
            merged_errors = self.errors.setdefault(name, {})
            for kind, count in errors.items():
                merged_errors[kind] = merged_errors.get(kind, 0) + count
        self.warmup_excluded += report.warmup_excluded
        self.reports.append({"worker": worker, "index": len(self.reports), **report.to_wire()})

    def result(self) -> dict[str, Any]:
        names = sorted(set(self.histograms) | set(self.errors))
        aggregated = new_histogram()
        aggregated_errors: dict[str, int] = {}
        by_name = {}
        for name in names:
            histogram = self.histograms.get(name) or new_histogram()
            aggregated.add(histogram)
            for kind, count in self.errors.get(name, {}).items():
                aggregated_errors[kind] = aggregated_errors.get(kind, 0) + count
            by_name[name] = _section(histogram, self.errors.get(name, {}))
        return {
            "format": OUTPUT_FORMAT,
            "unit": "us",
            "hdr": {"lowest": HDR_LOWEST_US, "highest": HDR_HIGHEST_US,
                    "significant_figures": HDR_SIGNIFICANT_FIGURES},
            "workers": sorted({report["worker"] for report in self.reports}),
            "warmup_excluded": self.warmup_excluded,
            "aggregated": _section(aggregated, aggregated_errors),
            "by_name": by_name,
            "reports": self.reports,
        }


def _section(histogram: Any, errors: dict[str, int]) -> dict[str, Any]:
    return {"count": histogram.get_total_count(), "errors_by_kind": dict(sorted(errors.items())),
            "summary": summarize(histogram), "histogram": encode(histogram)}


def summary_line(label: str, section: dict[str, Any]) -> str:
    """One printed line from a result section: count, p50/p90/p99/p99.9, max (us) and errors."""
    summary, errors = section["summary"], section["errors_by_kind"]
    line = f"{label}: n={section['count']}"
    if section["count"]:
        line += " " + " ".join(f"p{p:g}={summary[f'p{p:g}_us']:.0f}" for p in PRINTED_PERCENTILES)
        line += f" max={summary['max_us']:.0f} us"
    if errors:
        line += "; errors " + ", ".join(f"{kind}={count}" for kind, count in errors.items())
    return line


class DistributedRecorder:
    """The listeners' state in one Locust process (built on ``init``, after any fork)."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.pending = _Pending()
        self.merged = _Merged()
        self.warmup_until = 0.0  # wall clock; requests that started earlier are only counted

    def record(self, name: str, response_time_ms: float, exception: BaseException | None) -> None:
        """One request from Locust's ``request`` event (``response_time`` in unrounded ms)."""
        if self.warmup_until and time.time() - response_time_ms / 1000.0 < self.warmup_until:
            self.pending.warmup_excluded += 1
            return
        self.pending.record(name, response_time_ms, exception)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    def restart(self) -> None:
        """A new test run: fresh histograms, and the warm-up counted from now (on each process)."""
        self.pending = _Pending()
        self.merged = _Merged()
        options = self.environment.parsed_options
        warmup_s = float(getattr(options, "hdr_warmup", 0) or 0) if options is not None else 0.0
        self.warmup_until = time.time() + warmup_s if warmup_s > 0 else 0.0

    def take_report(self) -> WorkerReport:
        pending, self.pending = self.pending, _Pending()
        return pending.report()

    def result(self) -> dict[str, Any]:
        """The merged result; in local mode the process's own last window is added first."""
        if not self.is_master and not self.is_worker:
            self.merged.add("local", self.take_report().to_wire())
        return self.merged.result()


_recorder: DistributedRecorder | None = None


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--hdr-output", type=str, default="", env_var="LOCUST_HDR_OUTPUT",
                        help="write the lab's merged HdrHistograms (unrounded latencies, us) to this JSON file")
    parser.add_argument("--hdr-warmup", type=float, default=0.0, env_var="LOCUST_HDR_WARMUP",
                        help="seconds after the test starts whose requests stay out of the HdrHistograms "
                             "(counted apart as warmup_excluded)")


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    global _recorder
    options = environment.parsed_options
    if options is not None and (getattr(options, "hdr_warmup", 0) or 0) < 0:
        sys.exit(f"--hdr-warmup must be at least 0 seconds (got {options.hdr_warmup})")
    _recorder = DistributedRecorder(environment)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_: Any) -> None:
    if _recorder is not None:
        _recorder.restart()


@events.request.add_listener
def _on_request(name: str, response_time: float, exception: BaseException | None = None, **_: Any) -> None:
    if _recorder is not None:
        _recorder.record(name, response_time, exception)


@events.report_to_master.add_listener
def _on_report_to_master(client_id: str, data: dict[str, Any]) -> None:
    if _recorder is not None:
        data[REPORT_KEY] = _recorder.take_report().to_wire()  # msgpack: plain data only


@events.worker_report.add_listener
def _on_worker_report(client_id: str, data: dict[str, Any]) -> None:
    if _recorder is not None and REPORT_KEY in data:
        try:
            _recorder.merged.add(client_id, data[REPORT_KEY])
        except ValueError as error:
            print(f"distributed_recording: ignored a bad report: {error}", file=sys.stderr, flush=True)


@events.quitting.add_listener
def _on_quitting(environment: Any, **_: Any) -> None:
    # The master's quit waits for every worker's final report before `quitting` fires.
    if _recorder is None or _recorder.is_worker:
        return
    result = _recorder.result()
    print("Latency from the lab's HdrHistograms (unrounded, merged over workers; not Locust's percentiles):",
          flush=True)
    for name, section in result["by_name"].items():
        print("  " + summary_line(name, section), flush=True)
    print("  " + summary_line("all requests", result["aggregated"]), flush=True)
    if result["warmup_excluded"]:
        print(f"  warm-up: {result['warmup_excluded']} requests left out", flush=True)
    options = environment.parsed_options
    output = getattr(options, "hdr_output", "") if options is not None else ""
    if output:
        write_result(Path(output), result)


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write the merged result as JSON (parent folders created); a failure names the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    except OSError as error:
        print(f"distributed_recording: cannot write --hdr-output {path}: {error}", file=sys.stderr, flush=True)
        if _recorder is not None:
            _recorder.environment.process_exit_code = 1  # the run's result is lost: say so
        return
    print(f"HdrHistogram result written to {path}", flush=True)
