"""``poochlab report results/<run>``: rebuild tables, plots and the report from saved data alone."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a run folder written by `poochlab sweep` (results/<run>)")
    parser.add_argument("--p99-budget-ms", type=float, default=None,
                        help="p99 latency budget in ms (default: the manifest's p99_budget_ms, if any)")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples per configuration (default 2000)")


def run(args: argparse.Namespace) -> int:
    from poochlab.cli import CommandError
    from poochlab.experiments.analysis.report import build_report
    from poochlab.experiments.analysis.saved_run import RunFolderError

    if args.p99_budget_ms is not None and args.p99_budget_ms <= 0:
        raise CommandError(f"--p99-budget-ms must be positive, got {args.p99_budget_ms}")
    if args.resamples < 100:
        raise CommandError(f"--resamples must be at least 100, got {args.resamples}")
    try:
        built = build_report(args.run, args.p99_budget_ms, args.resamples)
    except (RunFolderError, ValueError) as error:
        raise CommandError(str(error)) from None
    for warning in built.warnings:
        print(f"warning: {warning}")
    if built.headline:
        print(built.headline)
    if built.best_label:
        print(f"best configuration under the p99 budget: {built.best_label}")
    print(f"tables:   {built.folder / 'tables'}")
    print(f"plots:    {built.folder / 'plots'}")
    print(f"report:   {built.markdown}")
    print(f"          {built.html}")
    print(f"notebook: {built.notebook}")
    return 0
