"""``poochlab compare RUN_A RUN_B``: which differences between two runs exceed their uncertainty."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_a", type=Path, help="the baseline run folder (results/<run>)")
    parser.add_argument("run_b", type=Path, help="the run compared against it")
    parser.add_argument("--all", action="store_true", help="list every matched configuration, not only real differences")
    parser.add_argument("--csv", type=Path, default=None, help="also write every row of the comparison to this CSV file")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from poochlab.cli import CommandError
    from poochlab.experiments.analysis.comparison import compare_analyses
    from poochlab.experiments.analysis.report_render import markdown_table
    from poochlab.experiments.analysis.run_analysis import analyze
    from poochlab.experiments.analysis.saved_run import RunFolderError, load_run

    if args.resamples < 100:
        raise CommandError(f"--resamples must be at least 100, got {args.resamples}")
    try:
        analyses = [analyze(load_run(path), resamples=args.resamples) for path in (args.run_a, args.run_b)]
    except (RunFolderError, ValueError) as error:
        raise CommandError(str(error)) from None
    comparison = compare_analyses(analyses[0], analyses[1], resamples=args.resamples, seed=args.seed)
    for warning in comparison.warnings:
        print(f"warning: {warning}")
    for side, labels in (("A", comparison.only_in_a), ("B", comparison.only_in_b)):
        for label in labels:
            print(f"only in run {side}: {label}")
    rows = comparison.rows if args.all else comparison.significant
    matched = comparison.rows["configuration"].nunique()
    print(f"\nA = {args.run_a}\nB = {args.run_b}\n{matched} matching configurations; "
          f"{len(comparison.significant)} differences whose 95% bootstrap interval of B - A excludes zero.\n")
    if len(rows):
        shown = rows[["configuration", "percentile", "a_ms", "b_ms", "difference_ms", "difference_ci_low_ms",
                      "difference_ci_high_ms", "relative_change", "significant"]]
        print(markdown_table(shown))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        comparison.rows.to_csv(args.csv, index=False)
        print(f"\nall rows: {args.csv}")
    return 0
