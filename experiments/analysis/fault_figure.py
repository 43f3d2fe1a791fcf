"""The report's fault figure: per fault trial, p99 per window over time with the faults shaded
and labelled, and below it the answers per window by path (model / cache / fallback) and the
failed requests, so a fault's effect on latency and on the answer paths reads off one time axis.

Drawn from trial records (windows keep their answer paths), not the tidy tables.
"""

from __future__ import annotations

from typing import Any, Sequence

from matplotlib.figure import Figure

from poochlab.experiments.faults.phases import window_p99_us
from poochlab.experiments.faults.phases import spans

MAX_FAULT_TRIALS = 4
PATH_COLORS = {"model": "C0", "cache": "C2", "fallback": "C1", "mixed": "C5"}


def fault_trials(records: Sequence[Any]) -> list[Any]:
    """Trials with faults, the first repetition of each configuration first."""
    chosen = [r for r in records if r.status == "ok" and r.faults and r.windows]
    chosen.sort(key=lambda r: (r.repetition, r.config_id))
    return chosen[:MAX_FAULT_TRIALS]


def _label(record: Any, trials: Sequence[Any]) -> str:
    """The trial and the factors in which the drawn trials differ (the others are the same)."""
    keys = [k for k in record.factors if len({repr(t.factors.get(k)) for t in trials}) > 1]
    return record.trial_id + (": " + ", ".join(f"{k}={record.factors[k]}" for k in keys) if keys else "")


def plot_faults_over_time(records: Sequence[Any]) -> tuple[Figure, str]:
    trials = fault_trials(records)
    figure = Figure(figsize=(4.6 * max(len(trials), 1), 5.6), layout="constrained")
    if not trials:
        axis = figure.add_subplot()
        axis.text(0.5, 0.5, "No trial in this run had faults.", ha="center", va="center")
        axis.set_axis_off()
        return figure, "No trial in this run had faults."
    grid = figure.add_gridspec(2, len(trials), height_ratios=(3, 2))
    kinds: set[str] = set()
    for column, record in enumerate(trials):
        top = figure.add_subplot(grid[0, column])
        bottom = figure.add_subplot(grid[1, column], sharex=top)
        windows = sorted(record.windows, key=lambda w: w.index)
        middle = [w.start_s + w.duration_s / 2 for w in windows]
        width = windows[0].duration_s * 0.9
        end_s = max(w.start_s + w.duration_s for w in windows)
        for axis in (top, bottom):
            for event, (start, stop) in zip([e for e in record.faults if e.get("injected_at_s") is not None],
                                             spans(record.faults, end_s)):
                axis.axvspan(start, max(stop, start + 0.05), color="0.5", alpha=0.35, lw=0)
                # From the fault's end to the first window back in the pre-fault band: lighter.
                recovered = float(event.get("recovered_at_s") or stop)
                if recovered > stop:
                    axis.axvspan(stop, recovered, color="0.5", alpha=0.12, lw=0)
                if axis is top:
                    kind = str(event.get("kind", "fault"))
                    kinds.add(kind)
                    axis.annotate(kind, (start, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                                  va="top", ha="left", xytext=(2, -2), textcoords="offset points")
                    if recovered > stop:
                        axis.annotate("recovery", (stop, 0.93), xycoords=("data", "axes fraction"), fontsize=6,
                                      va="top", ha="left", xytext=(2, -2), textcoords="offset points", color="0.3")
        p99 = [None if (us := window_p99_us(w)) is None else us / 1000 for w in windows]
        top.plot([m for m, v in zip(middle, p99) if v is not None], [v for v in p99 if v is not None],
                 "o-", color="C3", markersize=3, label="p99 per window")
        top.set_ylabel("p99 latency (ms)")
        top.set_ylim(bottom=0)
        top.set_title(_label(record, trials), fontsize=7)
        top.grid(alpha=0.3)
        bottom_of = [0.0] * len(windows)
        for path, color in PATH_COLORS.items():
            counts = [w.answer_paths.get(path, 0) for w in windows]
            if any(counts):
                bottom.bar(middle, counts, width, bottom=bottom_of, color=color, label=f"answered: {path}")
                bottom_of = [b + c for b, c in zip(bottom_of, counts)]
        errors = [w.errors for w in windows]
        if any(errors):
            bottom.bar(middle, errors, width, bottom=bottom_of, color="k", label="failed")
        cache_errors = [sum(w.cache_errors_by_reason.values()) for w in windows]
        if any(cache_errors):
            bottom.plot(middle, cache_errors, "x", color="C4", label="cache errors")
        bottom.set_xlabel("time in measurement (s)")
        bottom.set_ylabel("requests per window")
        bottom.grid(alpha=0.3)
        if column == 0:
            top.legend(fontsize=7, loc="upper right")
        bottom.legend(fontsize=6, loc="lower right")
    figure.suptitle("Faults over time: p99 and answer paths per window")
    caption = (f"For {len(trials)} fault trials (first repetition of each configuration first): top, the p99 latency "
               "(ms) of each measurement window against time since the measurement began (s); bottom, the requests "
               "of each window by the path that answered them (model, cache, fallback), failed requests in black and "
               "cache errors (bypasses included) as crosses. Dark grey bands are the faults ("
               + ", ".join(sorted(kinds)) + "), from injection to clearing (a crash: until the server is AVAILABLE "
               "again); the light band after one is its recovery, until the first window back in the pre-fault band.")
    return figure, caption
