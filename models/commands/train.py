"""``poochlab train``: generate (or read) the facts, train a variant, evaluate it, export the next version.

With ``--if-missing`` nothing happens when the base path already holds an exported version
(what ``make`` uses so that a second ``make test`` does not train again).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from poochlab.cli import CommandError
from poochlab.models.facts import DEFAULT_ROWS  # numpy only: the CLI stays free of TensorFlow
from poochlab.models.training import DEFAULT_SEED
from poochlab.models.variants import VARIANTS

if TYPE_CHECKING:
    from poochlab.models.training import ExportResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, choices=tuple(VARIANTS), help="model size")
    parser.add_argument(
        "--base-path", type=Path, help="TF Serving base path holding pooch_predictor/<version>/ "
        "(default: models/servables/<variant>)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the facts and of training (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="pupdates to generate (default: %(default)s)")
    parser.add_argument("--facts", type=Path, help="train on this existing facts file (JSONL) instead of generating one")
    parser.add_argument("--data-dir", type=Path, help="where facts and trained checkpoints live (default: models/data)")
    parser.add_argument("--if-missing", action="store_true", help="do nothing if a version is already exported")


def run(args: argparse.Namespace) -> int:
    from poochlab.models.export import ExportError, default_base_path, latest_version_dir
    from poochlab.models.facts import DEFAULT_DATA_DIR, FactsError

    base_path = args.base_path or default_base_path(args.variant)
    if args.if_missing:
        existing = latest_version_dir(base_path)
        if existing is not None:
            from poochlab.models.warmup_records import oversized_warmup

            stale = oversized_warmup(existing)
            if stale is None:
                print(f"{args.variant}: version {existing.name} already exported at {existing}; not training (--if-missing)")
                return 0
            # An export from before the warm-up cap: export its weights again with current records.
            print(f"{args.variant}: {stale}; exporting again as a new version")
            if _export_again(args.variant, base_path, args.data_dir or DEFAULT_DATA_DIR):
                return 0
    if args.facts is not None and not args.facts.is_file():
        raise CommandError(f"facts file {args.facts} does not exist")

    from poochlab.models.training import train_and_export

    try:
        result = train_and_export(
            args.variant,
            base_path,
            seed=args.seed,
            rows=args.rows,
            data_dir=args.data_dir or DEFAULT_DATA_DIR,
            facts_path=args.facts,
        )
    except (ExportError, FactsError, ValueError) as error:
        raise CommandError(str(error)) from None
    print_export(result)
    return 0


def _export_again(variant: str, base_path: Path, data_dir: Path) -> bool:
    """Export the newest trained model of ``variant`` as the next version (False: none trained)."""
    from poochlab.models.checkpoints import latest_trained_dir
    from poochlab.models.training import export_trained

    trained = latest_trained_dir(data_dir, variant)
    if trained is None:
        return False
    print_export(export_trained(trained, base_path))
    return True


def print_export(result: ExportResult) -> None:
    """What a user wants to see after an export: where it went, how good and how costly it is."""
    from poochlab.models.evaluation import format_table

    card = result.model_card
    cost = card["compute_cost"]
    print(f"exported {result.variant} as {result.version_dir}")
    print(f"trained in {card['training_seconds']:.1f} s on {card['training_rows']} pupdates ({card['facts']})")
    print(f"compute per call: batch 1 p50 {cost['batch_1_p50_us']:.0f} us, batch 32 p50 {cost['batch_32_p50_us']:.0f} us")
    ratio = card.get("cost_ratio_large_to_small")
    if ratio:
        print(f"large/small cost ratio (measured together): batch 1 {ratio['batch_1']}x, batch 32 {ratio['batch_32']}x")
    print(format_table(result.evaluation))
