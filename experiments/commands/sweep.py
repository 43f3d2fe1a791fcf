"""`poochlab sweep SPEC`: plan, run and report a sweep (see experiments/sweep/spec.py)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="sweep spec, e.g. experiments/default.toml")
    parser.add_argument("--dry-run", action="store_true", help="print the trial plan and estimated duration, run nothing")
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder that holds run folders (default: results)")
    parser.add_argument("--run-id", help="name of the run folder (default: <spec name>-<UTC time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path,
                        help="continue an interrupted run folder without repeating finished trials")
    parser.add_argument("--p99-budget-ms", type=float, help="p99 budget for the report (overrides the spec's)")
    parser.add_argument("--no-report", action="store_true", help="measure only; build the report later with `poochlab report`")


def run(args: argparse.Namespace) -> int:
    from poochlab.cli import CommandError
    from poochlab.experiments.sweep.plan import format_plan
    from poochlab.experiments.sweep.runner import RunError, SweepRunner, run_summary_text
    from poochlab.experiments.sweep.spec import SpecError, load_spec

    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        raise CommandError(str(error)) from None
    if args.p99_budget_ms is not None:
        from dataclasses import replace

        spec = replace(spec, p99_budget_ms=args.p99_budget_ms)
    if args.dry_run:
        from poochlab.experiments.sweep.plan import plan_trials

        print(format_plan(spec, plan_trials(spec)))
        return 0
    if args.resume is not None:
        run_dir = args.resume
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        run_dir = args.results / (args.run_id or f"{spec.name}-{stamp}")
    runner = SweepRunner(spec, run_dir, resume=args.resume is not None)
    print(format_plan(spec, runner.trials).split("\n\n")[0], file=sys.stderr)
    try:
        summary = runner.run()
    except RunError as error:
        raise CommandError(str(error)) from None
    print(run_summary_text(summary))
    if summary.interrupted:
        print(f"resume with: poochlab sweep {args.spec} --resume {run_dir}", file=sys.stderr)
        return 130
    if not args.no_report:
        from poochlab.experiments.analysis.report import build_report

        report = build_report(run_dir, p99_budget_ms=spec.p99_budget_ms)
        if report.headline:
            print(report.headline)  # how many trials and configurations the numbers can stand on
        print(f"report: {report}")
    return 0
