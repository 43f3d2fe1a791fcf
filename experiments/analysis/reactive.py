"""The report's "Possible worlds" table and "Reactive qualities" section, read from trial records.

Each quality states the numbers this run measured, or "not measured in this run" when the run
has no trial of that kind:

- responsive: p99 under steady load (trials without faults), and during faults;
- resilient: availability during faults and the time to recover (fault_summary);
- elastic: replicas joined / left (the record's ``timeline`` entries ``replica_joined`` /
  ``replica_left``) and p99 while the planned load changes (windows' ``planned_rate_rps``);
- message-driven: the share of requests shed and the latency of a refusal (the record's ``shed``).

The readers look for fields by name and treat a missing one as "not measured", so a run
recorded before a field existed still reads.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

from poochlab.experiments.recording.histograms import merge_encoded

NOT_MEASURED = "not measured in this run"
ARM_ORDER = ("stable", "canary", "baseline")
ARM_MODEL_TYPE = {"stable": "stable version (label stable)", "canary": "canary version (label canary)",
                  "baseline": "historical average (the fallback's model)"}


def _ok(records: Iterable[Any]) -> list[Any]:
    return [r for r in records if r.status == "ok"]


def _p99_ms(texts: Iterable[str | None]) -> float | None:
    try:
        merged = merge_encoded([t for t in texts if t])
    except ValueError:  # a damaged record: the analysis names it; no number from it here
        return None
    return merged.get_value_at_percentile(99) / 1000 if merged.get_total_count() else None


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _config_label(record: Any, varied: Sequence[str]) -> str:
    return ", ".join(f"{name}={record.factors.get(name)}" for name in varied) or record.config_id


# -- possible worlds ---------------------------------------------------------------------------

def possible_worlds_table(records: Sequence[Any], varied: Sequence[str] = ()) -> pd.DataFrame:
    """The case study's table per model type (arm), per configuration: pupdates served and
    scored, mean known likes per pupdate, mean predicted likes, MAE, and latency from the arm's
    merged histograms. Valid trials only; empty when no trial ran an A/B test."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in _ok(records):
        if not record.arms or not record.validity.valid:
            continue
        for arm, data in record.arms.items():
            groups.setdefault((_config_label(record, varied), arm), []).append(data)
    rows = []
    for (label, arm), parts in sorted(groups.items(), key=lambda item: (
            item[0][0], ARM_ORDER.index(item[0][1]) if item[0][1] in ARM_ORDER else 99)):
        scored = sum(p["pupdates_scored"] for p in parts)
        likes = sum((p["mean_likes"] or 0) * p["pupdates_scored"] for p in parts)
        predicted = sum((p["mean_predicted"] or 0) * p["pupdates_scored"] for p in parts)
        error = sum((p["mae"] or 0) * p["pupdates_scored"] for p in parts)
        histogram = merge_encoded([p["histogram"] for p in parts if p.get("histogram")])
        count = histogram.get_total_count()
        rows.append({
            "configuration": label, "model type": ARM_MODEL_TYPE.get(arm, arm), "arm": arm,
            "requests": sum(p["requests"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "pupdates served (scored)": scored, "excluded (altered)": sum(p["pupdates_excluded"] for p in parts),
            "mean likes per pupdate": likes / scored if scored else None,
            "mean predicted likes": predicted / scored if scored else None,
            "error (MAE, likes)": error / scored if scored else None,
            "p50 (ms)": histogram.get_value_at_percentile(50) / 1000 if count else None,
            "p99 (ms)": histogram.get_value_at_percentile(99) / 1000 if count else None,
        })
    return pd.DataFrame(rows)


# -- reactive qualities ------------------------------------------------------------------------

def responsive(records: Sequence[Any], varied: Sequence[str] = ()) -> str:
    steady = [r for r in _ok(records) if not r.faults and r.validity.valid]
    faulted = [r for r in _ok(records) if r.fault_summary]
    parts = []
    if steady:
        by_config: dict[str, list[Any]] = {}
        for record in steady:
            by_config.setdefault(_config_label(record, varied), []).append(record)
        p99s = {label: _p99_ms(w.histogram for r in group for w in r.result_windows())
                for label, group in by_config.items()}
        known = {k: v for k, v in p99s.items() if v is not None}
        if known:
            best, worst = min(known, key=known.__getitem__), max(known, key=known.__getitem__)
            parts.append(f"p99 under steady load {_ms(known[best])} ({best})"
                         + (f" to {_ms(known[worst])} ({worst})" if worst != best else "")
                         + f", over {len(steady)} valid trials without faults")
    if faulted:
        during = [r.fault_summary.get("during", {}).get("p99_ms") for r in faulted]
        during = [d for d in during if d is not None]
        if during:
            parts.append(f"p99 during faults up to {_ms(max(during))} (worst of {len(faulted)} fault trials)")
    return "; ".join(parts) + "." if parts else NOT_MEASURED + " (no valid trial answered requests)."


def resilient(records: Sequence[Any], varied: Sequence[str] = ()) -> str:
    faulted = [r for r in _ok(records) if r.fault_summary]
    if not faulted:
        return NOT_MEASURED + " (no trial with [[faults]])."
    parts = []
    for record in faulted:
        summary = record.fault_summary
        kinds = ", ".join(sorted({str(f.get("kind")) for f in record.faults})) or "fault"
        during = summary.get("during", {})
        recovery = summary.get("recovery_s")
        parts.append(f"{record.trial_id} ({_config_label(record, varied)}; {kinds}): availability during "
                     f"{_share(during.get('availability'))}, {during.get('errors', 0)} failed, recovered "
                     + (f"in {recovery:.1f} s" if recovery is not None else "not within the trial"))
    return "; ".join(parts) + "."


SCALING_EVENTS = {"replica_joined": "joined", "replica_left": "left"}


def _scaling_entries(record: Any) -> list[dict[str, Any]]:
    """The trial's replica changes from its ``timeline`` ({"at_s", "event": "replica_joined" |
    "replica_left", ...}, written by a reactive scaling policy); entries marked ``after_trial``
    (the pool returned to its minimum once the trial ended) are left out."""
    entries = getattr(record, "timeline", None) or []
    return [e for e in entries if isinstance(e, dict) and e.get("event") in SCALING_EVENTS and not e.get("after_trial")]


def elastic(records: Sequence[Any], varied: Sequence[str] = ()) -> str:
    parts = []
    changes = {"joined": 0, "left": 0}
    for record in _ok(records):
        for entry in _scaling_entries(record):
            changes[SCALING_EVENTS[entry["event"]]] += 1
    if changes["joined"] or changes["left"]:
        parts.append(f"replicas joined {changes['joined']} times, left {changes['left']} times")
    changing = []
    for record in _ok(records):
        rates = {getattr(w, "planned_rate_rps", None) for w in record.windows} - {None}
        if len(rates) > 1:
            changing.append(record)
    if changing:
        worst = max(((_p99_ms([w.histogram]) or 0.0, w.index, r.trial_id) for r in changing for w in r.windows),
                    default=None)
        overall = _p99_ms(w.histogram for r in changing for w in r.windows)
        parts.append(f"p99 while the planned load changed {_ms(overall)} over {len(changing)} trials "
                     + (f"(worst window {_ms(worst[0])}: {worst[2]} window {worst[1]})" if worst else ""))
    return "; ".join(parts) + "." if parts else NOT_MEASURED + " (no rate schedule or scaling)."


def message_driven(records: Sequence[Any], varied: Sequence[str] = ()) -> str:
    """From each trial's ``shed`` summary ({"requests", "share", "refusal_p50_us",
    "refusal_p99_us", ...}: requests the server refused at once rather than queue)."""
    shed = 0
    attempts = 0.0
    worst_refusal_us: float | None = None
    for record in _ok(records):
        summary = getattr(record, "shed", None) or {}
        count = int(summary.get("requests", 0))
        if not count:
            continue
        shed += count
        attempts += count / summary["share"] if summary.get("share") else 0.0
        refusal = summary.get("refusal_p99_us")
        if refusal is not None:
            worst_refusal_us = max(worst_refusal_us or 0.0, float(refusal))
    if not shed:
        return NOT_MEASURED + " (no request was shed)."
    text = (f"{shed} requests shed, {_share(shed / attempts if attempts else None)} of the attempts of the "
            "trials that shed")
    # Each trial's refusal p99 comes from its own merged histogram; the worst is stated, never an average.
    return text + (f"; refusal p99 up to {_ms(worst_refusal_us / 1000)} (worst trial)" if worst_refusal_us is not None
                   else "; refusal latency not recorded") + "."


QUALITIES = (("Responsive", responsive), ("Resilient", resilient), ("Elastic", elastic),
             ("Message-driven", message_driven))


def reactive_qualities(records: Sequence[Any], varied: Sequence[str] = ()) -> list[str]:
    """One sentence per quality, with its numbers or "not measured in this run"."""
    return [f"**{name}:** {reader(records, varied)}" for name, reader in QUALITIES]


