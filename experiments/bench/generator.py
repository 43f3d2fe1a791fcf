"""``poochlab bench generator``: can the load generator be trusted, and what does it cost?

Three measurements, in one run, each printed as a table and saved as JSON:

1. Open loop against the echo server (REST, uvloop + httptools), the generator on one core
   (one worker; the lab's standard placement: pinned when a core is to spare, raised priority):
   achieved rate, lateness p50/p99 and the trial's validity at each target rate.
   Target: >= 1,000 requests/s valid.
2. What recording costs: generator CPU per request (what bounds its throughput) in a closed
   loop against the echo server, with the full recorder and with a counter only, alternated
   ``--repeats`` times (which goes first alternates too); the cost is the median of the pairs'
   ratios. Target: under 5%.
3. The lab's REST server (Pooch Predictor, small) measured by ``wrk`` (C) and by the lab
   (lean client, closed loop, 1 user) with the same request body, alternated; each side's
   histograms merged over the repeats. Target: the lab's p50 within 1.35x of wrk's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from poochlab.cli import CommandError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _record(name: str) -> Any:
    from poochlab.experiments.records import TrialRecord

    return TrialRecord(run_id="bench-generator", trial_id=name, config_id=name, repetition=0, factors={}, seed=0)


def _result(record: Any) -> dict[str, Any]:
    from poochlab.experiments.recording.histograms import merge_encoded

    chosen = record.result_windows()
    latency = merge_encoded(w.histogram for w in chosen)
    seconds = sum(w.duration_s for w in chosen)
    has = latency.get_total_count() > 0
    return {"throughput_rps": sum(w.requests for w in chosen) / seconds if seconds else 0.0,
            "p50_us": float(latency.get_value_at_percentile(50)) if has else None,
            "p99_us": float(latency.get_value_at_percentile(99)) if has else None,
            "lateness_p50_us": record.generator.get("lateness_p50_us"),
            "lateness_p99_us": record.generator.get("lateness_p99_us"),
            "generator_cpu_percent": record.generator.get("worker_cpu_percent"),
            "loop_lag_p99_us": record.generator.get("loop_lag_p99_us"),
            "errors": sum(record.errors_by_kind.values()),
            "valid": record.validity.valid, "reasons": list(record.validity.reasons),
            "placement": record.resources.get("placement", {}).get("cores")}


def open_loop_rates(args: argparse.Namespace, workload: Any) -> list[dict[str, Any]]:
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load import LoadSettings, measure_trial
    from poochlab.experiments.load.echo_server import start_echo_server

    rows = []
    with start_echo_server(grpc=False) as echo:
        for rate in args.rates:
            settings = LoadSettings(mode="open", rate_rps=rate, window_s=args.window_s, warmup_s=1.0,
                                    min_windows=3, max_windows=args.max_windows)
            record = measure_trial(settings, ClientConfig(rest_url=echo.rest_url), workload,
                                   _record(f"open-{rate:g}"), server_pid=echo.pid)
            row = {"target_rps": rate, **_result(record)}
            rows.append(row)
            print(f"open loop {rate:6.0f}/s: achieved {row['throughput_rps']:7.1f}/s  p50 {_ms(row['p50_us'])}  "
                  f"p99 {_ms(row['p99_us'])}  lateness p50 {_ms(row['lateness_p50_us'])} "
                  f"p99 {_ms(row['lateness_p99_us'])}  cpu {row['generator_cpu_percent']}  "
                  f"{'VALID' if row['valid'] else 'INVALID: ' + '; '.join(row['reasons'])}", flush=True)
    return rows


def recording_cost(args: argparse.Namespace, workload: Any) -> dict[str, Any]:
    """Generator CPU per answered request with the recorder and with a bare counter.

    On a shared machine throughput mostly measures the neighbours; CPU seconds per request are
    what bounds a CPU-bound generator's throughput, so the cost is judged on them (throughput is
    printed too).
    """
    from poochlab.clients.config import ClientConfig
    from poochlab.experiments.load import LoadSettings, measure_trial
    from poochlab.experiments.load.echo_server import start_echo_server

    settings = LoadSettings(mode="closed", users=args.cost_users, window_s=args.window_s, warmup_s=1.0,
                            min_windows=3, max_windows=3)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with start_echo_server(grpc=False) as echo:
        client = ClientConfig(rest_url=echo.rest_url)
        for repeat in range(args.repeats):
            # Alternate which goes first, so that a drift within a pair favours neither.
            for recording in ((True, False) if repeat % 2 == 0 else (False, True)):
                record = measure_trial(settings, client, workload, _record(f"cost-{recording}-{repeat}"),
                                       server_pid=echo.pid, _record_requests=recording)
                answered = sum(w.requests for w in record.windows)
                run = {"throughput_rps": answered / sum(w.duration_s for w in record.windows),
                       "cpu_us_per_request": 1e6 * record.resources["generator_cpu_s"] / max(answered, 1)}
                runs[recording].append(run)
                print(f"closed loop {args.cost_users} users, recorder {'on ' if recording else 'off'}: "
                      f"{run['throughput_rps']:7.1f}/s, generator CPU {run['cpu_us_per_request']:6.1f} us/request",
                      flush=True)
    on = statistics.median(r["cpu_us_per_request"] for r in runs[True])
    off = statistics.median(r["cpu_us_per_request"] for r in runs[False])
    # Judged per pair (the two runs of one repeat are seconds apart): a neighbour's burst during
    # one run of one pair moves one ratio, where it would move a median of unpaired runs.
    paired = statistics.median(w["cpu_us_per_request"] / wo["cpu_us_per_request"]
                               for w, wo in zip(runs[True], runs[False]))
    return {"users": args.cost_users, "with_recorder": runs[True], "without_recorder": runs[False],
            "median_cpu_us_with": on, "median_cpu_us_without": off,
            "median_throughput_with": statistics.median(r["throughput_rps"] for r in runs[True]),
            "median_throughput_without": statistics.median(r["throughput_rps"] for r in runs[False]),
            "cost_percent": 100.0 * (paired - 1.0) / paired,
            "cost_percent_of_unpaired_medians": 100.0 * (on - off) / on}


def lab_vs_wrk(args: argparse.Namespace) -> dict[str, Any]:
    from poochlab.clients.config import ClientConfig
    from poochlab.clients.rest_predictor import encode_request
    from poochlab.experiments.bench.batching import WRK_SCRIPT, run_wrk, servable_base, start_server
    from poochlab.experiments.load import LoadSettings, Workload, measure_trial
    from poochlab.experiments.recording.histograms import add_encoded, new_histogram
    from poochlab.models.facts import generate_pupdates
    from poochlab.models.pupdate import MODEL_NAME, SIGNATURE_NAME, prediction_inputs

    pupdate = generate_pupdates(1, seed=3)[0]
    workload = Workload((pupdate,), zipf_s=1.0, source="one fixed pupdate")  # the same request every time
    body = encode_request([prediction_inputs(pupdate)], SIGNATURE_NAME, "row").decode()
    workdir = Path(tempfile.mkdtemp(prefix="bench-generator-"))
    script = workdir / "predict.lua"
    script.write_text(WRK_SCRIPT % {"body": body})
    server = start_server(servable_base(args.servables, "small"), None, workdir / "server.log")
    wrk_all, lab_all = new_histogram(), new_histogram()  # merged over the repeats, like with like
    runs = []
    try:
        url = f"{server.rest_url}/v1/models/{MODEL_NAME}:predict"
        # No pinning or priority change here: wrk runs without them, so both see the same machine.
        settings = LoadSettings(mode="closed", users=1, window_s=args.window_s, warmup_s=1.0, min_windows=3,
                                max_windows=3, pin_cpus=False)
        run_wrk(url, script, 1, 1)  # warm-up, as the lab's trials have one
        for repeat in range(args.repeats):
            wrk = _wrk_histogram(run_wrk(url, script, 1, args.wrk_seconds))
            wrk_all.add(wrk)
            record = measure_trial(settings, ClientConfig(rest_url=server.rest_url, library="lean"), workload,
                                   _record(f"lab-{repeat}"), server_pid=server.pid)
            lab = _result(record)
            for window in record.windows:
                add_encoded(lab_all, window.histogram)
            runs.append({"wrk_p50_us": wrk.get_value_at_percentile(50), "wrk_requests": wrk.get_total_count(),
                         **{f"lab_{k}": v for k, v in lab.items()}})
            print(f"lab REST server, 1 connection: wrk p50 {_ms(wrk.get_value_at_percentile(50))} "
                  f"({wrk.get_total_count()} requests), lab p50 {_ms(lab['p50_us'])} p99 {_ms(lab['p99_us'])}",
                  flush=True)
    finally:
        server.stop()
    wrk_p50, lab_p50 = wrk_all.get_value_at_percentile(50), lab_all.get_value_at_percentile(50)
    return {"runs": runs, "wrk_p50_us": wrk_p50, "lab_p50_us": lab_p50, "ratio_of_medians": lab_p50 / wrk_p50,
            "body": body}


def _wrk_histogram(result: dict[str, Any]) -> Any:
    """wrk's own latency histogram (``[[us, count], ...]`` from bench batching's script) as hdrh."""
    from poochlab.experiments.recording.histograms import clamp_us, new_histogram

    if "latency_us" not in result:
        raise CommandError(f"wrk's result has no latency histogram: {sorted(result)}")
    histogram = new_histogram()
    for value, count in result["latency_us"]:
        histogram.record_value(clamp_us(value), count)
    return histogram


def _ms(value: float | None) -> str:
    return "   -    " if value is None else f"{value / 1000:6.3f} ms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def rates(text: str) -> list[float]:
        return [float(part) for part in text.split(",") if part]

    parser.add_argument("--rates", type=rates, default=[500.0, 1000.0, 1500.0, 2000.0],
                        help="open-loop rates to try against the echo server (comma separated)")
    parser.add_argument("--window-s", type=float, default=2.0, help="measurement window (seconds)")
    parser.add_argument("--max-windows", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="alternations for the paired comparisons")
    parser.add_argument("--cost-users", type=int, default=4, help="closed-loop users for the recording cost")
    parser.add_argument("--wrk-seconds", type=float, default=5.0)
    parser.add_argument("--servables", type=Path, default=REPO_ROOT / "models" / "servables")
    parser.add_argument("--skip", action="append", default=[], choices=["open", "cost", "wrk"],
                        help="leave out one part (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "bench" / "generator.json")


def run(args: argparse.Namespace) -> int:
    import platform

    from poochlab.experiments.load import Workload

    if args.repeats < 1:
        raise CommandError("--repeats must be at least 1")
    workload = Workload.generated(5000, seed=1)
    report: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "load_average_at_start": os.getloadavg()}}
    checks = []
    if "open" not in args.skip:
        report["open_loop"] = open_loop_rates(args, workload)
        sustained = [r["target_rps"] for r in report["open_loop"]
                     if r["valid"] and r["throughput_rps"] >= 0.95 * r["target_rps"]]
        best = max(sustained, default=0.0)
        checks.append(f"open loop: highest valid rate sustained on one worker {best:.0f}/s "
                      f"(target >= 1000/s): {'PASS' if best >= 1000 else 'FAIL'}")
    if "cost" not in args.skip:
        report["recording_cost"] = cost = recording_cost(args, workload)
        checks.append(f"recording cost {cost['cost_percent']:.1f}% of a CPU-bound generator's throughput "
                      f"(median of {args.repeats} pairs' ratios; medians {cost['median_cpu_us_without']:.0f} us "
                      f"CPU/request without, {cost['median_cpu_us_with']:.0f} us with; target < 5%): "
                      f"{'PASS' if cost['cost_percent'] < 5 else 'FAIL'}")
    if "wrk" not in args.skip:
        report["lab_vs_wrk"] = versus = lab_vs_wrk(args)
        checks.append(f"lab p50 / wrk p50 on the lab REST server = {versus['ratio_of_medians']:.2f} "
                      f"(target <= 1.35): {'PASS' if versus['ratio_of_medians'] <= 1.35 else 'FAIL'}")
    report["machine"]["load_average_at_end"] = os.getloadavg()
    checks.append("machine load average (1, 5, 15 min) at start {} and end {}: other processes share "
                  "these cores".format(*(tuple(round(x, 1) for x in report["machine"][k])
                                         for k in ("load_average_at_start", "load_average_at_end"))))
    report["checks"] = checks
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print("\n".join(checks))
    print(f"saved {args.out}")
    return 0
