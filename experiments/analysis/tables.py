"""The tidy tables on disk: ``results/<run>/tables/`` as CSV and Parquet, plus a small schema file.

Writing them is the last step that needs the raw trial records; the plots and the notebook read
only these files (through :func:`load_tables`), so the notebook draws exactly the report's figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from poochlab.experiments.analysis.run_analysis import TABLE_SCHEMA_VERSION, RunAnalysis
from poochlab.experiments.records import write_atomically
from poochlab.experiments.sweep.factors import factor_roles

TABLE_NAMES = ("trials", "configs", "windows", "spectrum", "effects")


@dataclass
class Tables:
    trials: pd.DataFrame
    configs: pd.DataFrame
    windows: pd.DataFrame
    spectrum: pd.DataFrame
    factors: list[str]
    varied: list[str]
    budget_ms: float | None
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)  # see analysis.effects
    aliases: dict[str, str] = field(default_factory=dict)  # factor -> the factor it moves in lockstep with
    roles: dict[str, str] = field(default_factory=dict)  # factor -> analysis role, from the run's manifest

    @property
    def load_factors(self) -> list[str]:
        """The varied factors that set the load (compared within, never optimised over)."""
        roles = self.roles or factor_roles({})
        return [name for name in self.varied if roles.get(name) == "load"]

    @property
    def label_factors(self) -> list[str]:
        """The varied factors that name a configuration (lockstep aliases left out)."""
        return [name for name in self.varied if name not in self.aliases]


def tables_of(analysis: RunAnalysis, budget_ms: float | None) -> Tables:
    return Tables(analysis.trials, analysis.configs, analysis.windows, analysis.spectrum,
                  analysis.factors, analysis.varied, budget_ms, analysis.effects, dict(analysis.aliases),
                  dict(analysis.roles))


def write_tables(tables: Tables, folder: Path) -> list[Path]:
    """Write every table as CSV and Parquet into ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TABLE_NAMES:
        frame: pd.DataFrame = getattr(tables, name)
        frame.to_csv(folder / f"{name}.csv", index=False)
        frame.to_parquet(folder / f"{name}.parquet", index=False)
        written += [folder / f"{name}.csv", folder / f"{name}.parquet"]
    schema: dict[str, Any] = {
        "schema_version": TABLE_SCHEMA_VERSION,
        "factors": tables.factors,
        "varied": tables.varied,
        "aliases": tables.aliases,
        "p99_budget_ms": tables.budget_ms,
        "units": "latencies in milliseconds (columns *_ms), throughput in requests per second (*_rps)",
    }
    write_atomically(folder / "schema.json", json.dumps(schema, indent=1))
    written.append(folder / "schema.json")
    return written


def load_tables(folder: Path | str) -> Tables:
    """Read the tables written by :func:`write_tables` (Parquet keeps the column types)."""
    folder = Path(folder)
    schema_path = folder / "schema.json"
    if not schema_path.is_file():
        raise FileNotFoundError(f"{schema_path}: missing; run `poochlab report` on the run first")
    schema = json.loads(schema_path.read_text())
    if schema.get("schema_version") != TABLE_SCHEMA_VERSION:
        raise ValueError(f"{schema_path}: schema_version {schema.get('schema_version')!r}, this lab reads {TABLE_SCHEMA_VERSION}")
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in TABLE_NAMES}
    return Tables(**frames, factors=list(schema["factors"]), varied=list(schema["varied"]),
                  budget_ms=schema.get("p99_budget_ms"), aliases=dict(schema.get("aliases") or {}))
