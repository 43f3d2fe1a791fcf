"""The load generator's own floor, read from the manifest for the report.

The sweep runner measures, once per client path and load, the same client against an echo
server and records under ``manifest["generator_floor"][key]``: the floor's TrialRecord file
(``record``, relative to the run folder), a ``summary_us`` of its percentiles, and its validity.
The record's histograms are preferred (exact, and any percentile); the summary is the fallback;
hand-written manifests with ``p50_ms``/``p99_ms`` or a bare hdrh text are read too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from poochlab.experiments.analysis.bucket_counts import add_counts, decode_counts, percentile_us
from poochlab.experiments.records import TrialRecord

NAN = float("nan")


def _from_record(run_folder: Path, relative: str) -> dict[str, float] | None:
    path = run_folder / relative
    if not path.is_file():
        return None
    record = TrialRecord.read(path)
    chosen = record.result_windows()
    if not chosen:
        return None
    counts = add_counts(decode_counts(w.histogram, f"{path}: window {w.index}") for w in chosen)
    return {"p50_ms": percentile_us(counts, 50) / 1000, "p99_ms": percentile_us(counts, 99) / 1000,
            "max_ms": percentile_us(counts, 100) / 1000, "requests": float(counts.sum())}


def _from_entry(run_folder: Path, key: str, entry: Any) -> tuple[dict[str, float], str]:
    """(numbers in ms, note) of one floor entry, whatever form it takes."""
    if isinstance(entry, str):
        counts = decode_counts(entry, f"manifest.json: generator_floor.{key}")
        return {"p50_ms": percentile_us(counts, 50) / 1000, "p99_ms": percentile_us(counts, 99) / 1000}, ""
    if not isinstance(entry, dict):
        return {}, f"unrecognised entry {entry!r}"
    note = "" if entry.get("valid", True) else "invalid: " + "; ".join(map(str, entry.get("reasons") or []))
    if isinstance(entry.get("record"), str):
        try:
            numbers = _from_record(run_folder, entry["record"])
        except ValueError as error:
            numbers, note = None, f"{note}; record unreadable ({error})".lstrip("; ")
        if numbers:
            return numbers, note
    summary = entry.get("summary_us")
    if isinstance(summary, dict) and summary:
        return {name.replace("_us", "_ms"): value / 1000 for name, value in summary.items()
                if name.endswith("_us") and isinstance(value, (int, float))} | (
            {"requests": summary["count"]} if isinstance(summary.get("count"), (int, float)) else {}), note
    if isinstance(entry.get("histogram"), str):
        return _from_entry(run_folder, key, entry["histogram"])[0], note
    numbers = {k: float(v) for k, v in entry.items() if k.endswith("_ms") and isinstance(v, (int, float))}
    return numbers, note or ("" if numbers else "no latency recorded")


def floor_table(manifest: dict[str, Any], run_folder: Path) -> pd.DataFrame | None:
    """One row per client path and load: p50, p99 (ms) and the rest known; None if none recorded."""
    floors = manifest.get("generator_floor")
    if not isinstance(floors, dict) or not floors:
        return None
    rows = []
    for key, entry in floors.items():
        numbers, note = _from_entry(run_folder, str(key), entry)
        rows.append({"client path and load": str(key), "p50 ms": numbers.get("p50_ms", NAN),
                     "p99 ms": numbers.get("p99_ms", NAN), "max ms": numbers.get("max_ms", NAN),
                     "requests": numbers.get("requests", NAN), "note": note})
    table = pd.DataFrame(rows)
    # Drop columns nothing filled in (a hand-written manifest may give only p50 and p99).
    keep = [c for c in table.columns if c in ("client path and load", "note") or not table[c].isna().all()]
    table = table[keep]
    if not any(table["note"]):
        table = table.drop(columns="note")
    return table


def floor_p50_ms(table: pd.DataFrame | None) -> float:
    """The smallest floor p50: no latency in the run can be trusted below it."""
    if table is None or "p50 ms" not in table:
        return NAN
    value = table["p50 ms"].min()
    return NAN if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
