#!/usr/bin/env bash
# Lint (ruff) and type-check (mypy) the package, both configured in pyproject.toml.
# The stages live in top-level folders but import as poochlab.<stage> (an editable install's
# import hook, which mypy cannot follow), so mypy reads them through a tree of symlinks that
# mirrors the installed layout.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
$BIN/python -m ruff check .  # as modules: whatever the venv can import, with or without scripts
tree=build/typecheck/poochlab
rm -rf build/typecheck && mkdir -p "$tree"
for stage in clients experiments models processes serving; do ln -s "../../../$stage" "$tree/$stage"; done
for f in poochlab/*.py; do ln -s "../../../$f" "$tree/$(basename "$f")"; done
MYPYPATH=build/typecheck $BIN/python -m mypy --explicit-package-bases \
    $(find -L "$tree" -name '*.py' -not -path '*/servables/*' -not -path '*/data/*' | sort) \
    | sed "s|^$tree/||"
