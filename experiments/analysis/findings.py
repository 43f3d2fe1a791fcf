"""The report's answer in words, computed from the saved tables (the notebook calls these too).

Nothing here is written per spec: the validity headline counts the trials table, each factor's
sentence reads its ``overall`` rows of the effects table (a 95% interval that excludes zero is an
effect, one that includes zero is "no measurable effect", no interval is "cannot tell"), the
interaction sentences read its ``interaction`` rows, and the best configuration comes from the
configuration table restricted to configurations with valid trials.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

from poochlab.experiments.analysis.effects import CANNOT_TELL, DECREASES, DEPENDS, INCREASES, NO_EFFECT
from poochlab.experiments.analysis.number_format import (
    format_interval,
    format_number,
    format_ratio,
    format_signed,
)
from poochlab.experiments.analysis.tables import Tables

# How each kind of invalid trial is named in the headline.
KIND_NAMES = {
    "generator_limited": "generator-limited",
    "cache_unreliable": "with an unreliable cache",
    "request_errors": "with request errors load does not cause",
    "no_data": "with no data",
    "failed": "failed",
    "invalid": "invalid (older record: kind not recorded)",
}
# A throughput change smaller than this share is not worth a sentence.
THROUGHPUT_SHARE_WORTH_SAYING = 0.05
MAX_REASONS = 2


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _common_setting(rows: pd.DataFrame, factors: list[str]) -> str:
    """The factor values every row shares ("protocol=grpc, load_level=high"), or ""."""
    shared = [f"{name}={rows[name].iloc[0]}" for name in factors if name in rows and rows[name].nunique(dropna=False) == 1]
    return ", ".join(shared)


def _reasons_text(reasons: list[str]) -> str:
    counted = Counter(r for r in reasons if r)
    shown = [reason + (f" ×{n}" if n > 1 and len(counted) > 1 else "") for reason, n in counted.most_common(MAX_REASONS)]
    more = len(counted) - len(shown)
    return "; ".join(shown) + (f"; and {_count(more, 'other reason')}" if more > 0 else "")


def validity_headline(tables: Tables) -> str:
    """How many trials and configurations are valid, and why the others are not, by kind."""
    trials, configs = tables.trials, tables.configs
    valid = trials["valid"].astype(bool)
    overloaded = int(trials["server_overloaded"].astype(bool).sum()) if "server_overloaded" in trials else 0
    with_valid = int((configs["valid_trials"] > 0).sum())
    text = (f"**{int(valid.sum())} of {_count(len(trials), 'trial')} are valid**"
            + (f" ({overloaded} of them with the server overloaded: valid, and a finding below)" if overloaded else "")
            + f"; **{with_valid} of {_count(len(configs), 'configuration')} have valid trials** and give numbers.")
    invalid = trials[~valid]
    if invalid.empty:
        return text + " No trial was invalid."
    parts = []
    categories = invalid["validity_category"] if "validity_category" in invalid else pd.Series("invalid", invalid.index)
    for kind in list(dict.fromkeys(categories)):
        rows = invalid[categories == kind]
        reasons = [r.removeprefix("failed: ") for text in rows.get("invalid_reasons", rows["validity_reasons"])
                   for r in str(text).split("; ")]
        setting = _common_setting(rows, tables.label_factors) if len(rows) > 1 else ""
        detail = (f"all at {setting}: " if setting else "") + _reasons_text(reasons)
        parts.append(f"{_count(len(rows), 'trial')} {KIND_NAMES.get(kind, kind)} ({detail})")
    text += " Not valid: " + "; ".join(parts) + "."
    without = configs[configs["valid_trials"] == 0]
    if len(without):
        text += (f" {_count(len(without), 'configuration')} without a valid trial "
                 f"{'is' if len(without) == 1 else 'are'} left out of every result and listed under Validity.")
    return text


def _factor_name(factor: str, tables: Tables) -> str:
    followers = [name for name, leader in tables.aliases.items() if leader == factor]
    return f"**{factor}**" + (f" (with {', '.join(followers)}, which moves in lockstep)" if followers else "")


def _effect_clause(row: pd.Series) -> str:
    """"p99 ×2.00 [1.9, 2.1], +3.1 ms [2.8, 3.4]"."""
    unit = row["unit"]
    return (f"{row['metric']} {format_ratio(row['ratio'])} {format_interval(row['ratio_ci_low'], row['ratio_ci_high'])}, "
            f"{format_signed(row['difference'])} {unit} {format_interval(row['difference_ci_low'], row['difference_ci_high'], signed=True)}")


def _verb(verdict: str, metric: str) -> str:
    return {INCREASES: f"raises {metric}", DECREASES: f"lowers {metric}"}.get(verdict, "")


def factor_sentences(tables: Tables) -> list[str]:
    """One sentence per factor and compared value: its effect on p99 (and p50, throughput)."""
    effects = tables.effects
    if effects is None or effects.empty:
        return ["No factor varies between configurations with valid trials, so no effect can be estimated."]
    overall = effects[effects["kind"] == "overall"]
    sentences = []
    for (factor, level), rows in overall.groupby(["factor", "level"], sort=False):
        by_metric = {r["metric"]: r for _, r in rows.iterrows()}
        p99 = by_metric["p99"]
        head = f"{_factor_name(factor, tables)}: {level} instead of {p99['baseline']}"
        if int(p99["pairs"]) == 0:
            sentences.append(f"{head}: cannot tell, no two configurations with valid trials differ only in {factor}.")
            continue
        scope = f"(mean over {_count(int(p99['pairs']), 'setting')} of the other factors, 95% intervals)"
        if p99["verdict"] == CANNOT_TELL:
            sentences.append(f"{head}: cannot tell, too few measurement windows for an interval "
                             f"(p99 {format_signed(p99['difference'])} ms measured, {scope}).")
            continue
        if p99["verdict"] == NO_EFFECT:
            text = (f"{head} has **no measurable effect** on p99: {_effect_clause(p99)} {scope}; "
                    "the interval includes zero.")
        else:
            text = (f"{head} **{_verb(p99['verdict'], 'p99')}**: {_effect_clause(p99)} {scope}; "
                    "the interval excludes zero.")
        extras = []
        if "p50" in by_metric:
            p50 = by_metric["p50"]
            said = _verb(p50["verdict"], "p50") or ("has no measurable effect on p50" if p50["verdict"] == NO_EFFECT else "")
            if said:
                extras.append(f"it {said} ({_effect_clause(p50)})")
        if "throughput" in by_metric:
            tput = by_metric["throughput"]
            change = tput["ratio"] - 1 if not math.isnan(tput["ratio"]) else math.nan
            if tput["verdict"] in (INCREASES, DECREASES) and abs(change) >= THROUGHPUT_SHARE_WORTH_SAYING:
                extras.append(f"achieved throughput {format_signed(100 * change)}% "
                              f"({format_signed(tput['difference'])} req/s "
                              f"{format_interval(tput['difference_ci_low'], tput['difference_ci_high'], signed=True)})")
        if extras:
            text += " Also: " + "; ".join(extras) + "."
        sentences.append(text)
    return sentences


def interaction_sentences(tables: Tables) -> list[str]:
    """The effects on p99 whose size or sign changes with another factor, said plainly."""
    effects = tables.effects
    if effects is None or effects.empty:
        return []
    contrasts = effects[effects["kind"] == "interaction"]
    if contrasts.empty:
        return ["Interactions: the design has no two factors crossed with valid trials, so none can be checked."]
    at = effects[effects["kind"] == "at"]
    sentences, seen = [], set()
    for _, row in contrasts[contrasts["verdict"] == DEPENDS].iterrows():
        other = row["other"].split("=")[0]
        pair = frozenset((row["factor"], other))
        if pair in seen:
            continue  # F x G and G x F are the same contrast
        seen.add(pair)
        rows = at[(at["factor"] == row["factor"]) & (at["level"] == row["level"])
                  & at["other"].str.startswith(f"{other}=")]
        verdicts = set(rows["verdict"]) - {NO_EFFECT, CANNOT_TELL}
        how = "reverses" if verdicts == {INCREASES, DECREASES} else "changes size"
        values = "; ".join(f"{format_ratio(r['ratio'])} {format_interval(r['ratio_ci_low'], r['ratio_ci_high'])} "
                           f"({format_signed(r['difference'])} ms) at {r['other']}" for _, r in rows.iterrows())
        sentences.append(f"**{row['factor']}'s effect on p99 {how} with {other}** "
                         f"({row['factor']}={row['level']} against {row['baseline']}): {values}.")
    checked = {frozenset((r["factor"], r["other"].split("=")[0])) for _, r in contrasts.iterrows()}
    unknown = {frozenset((r["factor"], r["other"].split("=")[0])) for _, r in contrasts.iterrows()
               if r["verdict"] == CANNOT_TELL} - seen
    if not sentences:
        sentences.append(f"No factor's effect on p99 measurably changes size or sign with another factor "
                         f"({_count(len(checked), 'pair')} of factors checked, on the ratio scale).")
    if unknown:
        sentences.append(f"{_count(len(unknown), 'pair')} of factors could not be checked for an interaction "
                         "(too few windows for an interval).")
    return sentences


def _short(row: pd.Series) -> str:
    return str(row["label"])


def best_sentence(tables: Tables) -> str:
    """The best valid configuration within the budget and what it gives up."""
    configs = tables.configs
    usable = configs[(configs["valid_trials"] > 0) & configs["p99_ms"].notna()]
    if usable.empty:
        return "No configuration has a valid trial, so none can be recommended."
    fastest = usable.loc[usable["p99_ms"].idxmin()]
    busiest = usable.loc[usable["throughput_rps"].idxmax()]
    budget = tables.budget_ms
    if budget is None:
        return (f"No p99 budget was given. Lowest p99: **{_short(fastest)}** ({format_number(fastest['p99_ms'])} ms at "
                f"{format_number(fastest['throughput_rps'])} req/s); highest throughput: **{_short(busiest)}** "
                f"({format_number(busiest['throughput_rps'])} req/s at p99 {format_number(busiest['p99_ms'])} ms).")
    within = usable[usable["p99_ms"] <= budget]
    if within.empty:
        return (f"**No valid configuration meets the p99 budget of {budget:g} ms**; the lowest p99 is "
                f"{format_number(fastest['p99_ms'])} ms ({_short(fastest)}).")
    best = within.loc[within["throughput_rps"].idxmax()]
    sure = not math.isnan(best["p99_ci_high_ms"]) and best["p99_ci_high_ms"] <= budget
    text = (f"Best within the p99 budget of {budget:g} ms: **{_short(best)}**, "
            f"{format_number(best['throughput_rps'])} req/s at p99 {format_number(best['p99_ms'])} ms "
            f"{format_interval(best['p99_ci_low_ms'], best['p99_ci_high_ms'])}"
            + ("" if sure else " (its interval reaches past the budget: it may not meet it)") + ".")
    gives = []
    if fastest["config_id"] != best["config_id"]:
        gives.append(f"{format_number(best['p99_ms'] - fastest['p99_ms'])} ms of p99 against the lowest-p99 "
                     f"configuration ({_short(fastest)}, {format_number(fastest['p99_ms'])} ms at "
                     f"{format_number(fastest['throughput_rps'])} req/s)")
    if busiest["config_id"] != best["config_id"]:
        gives.append(f"{format_number(busiest['throughput_rps'] - best['throughput_rps'])} req/s against the "
                     f"highest-throughput one ({_short(busiest)}, whose p99 of {format_number(busiest['p99_ms'])} ms "
                     "is over the budget)")
    return text + (" It gives up " + "; and ".join(gives) + "." if gives else " It is also the lowest-p99 configuration.")


def overload_sentences(tables: Tables) -> list[str]:
    """Server-overloaded trials are valid: the server, not the instrument, fell behind."""
    configs = tables.configs
    if "server_overloaded_trials" not in configs:
        return []
    hit = configs[configs["server_overloaded_trials"] > 0]
    if hit.empty:
        return []
    parts = []
    for _, row in hit.iterrows():
        planned = row.get("planned_rate_rps", math.nan)
        rate = (f"{format_number(row['throughput_rps'])} of the planned {format_number(planned)} req/s"
                if isinstance(planned, float) and not math.isnan(planned) else f"{format_number(row['throughput_rps'])} req/s")
        parts.append(f"{_short(row)} ({rate}, p99 {format_number(row['p99_ms'])} ms)")
    return [f"**The server could not keep up** in {_count(len(hit), 'configuration')} (the generator sent on time; "
            "requests queued or timed out; these numbers are valid and describe the overloaded server): "
            + "; ".join(parts) + "."]


def omission_sentences(tables: Tables) -> list[str]:
    configs = tables.configs
    if "co_hiding_stalls" not in configs:
        return []
    hit = configs[configs["co_hiding_stalls"].astype(bool)]
    if hit.empty:
        return []
    return [f"**Coordinated omission hides stalls** in {_count(len(hit), 'configuration')}: their corrected p99 is "
            "more than twice the measured one (" + "; ".join(
                f"{_short(r)}: {format_number(r['p99_ms'])} ms measured, {format_number(r['p99_corrected_ms'])} ms corrected"
                for _, r in hit.iterrows()) + "). Closed-loop users waited out the stalls instead of sending; "
            "read these p99s as lower bounds."]


def findings(tables: Tables) -> list[str]:
    """Every finding, in the report's order: validity, effects, interactions, overload, best."""
    return ([validity_headline(tables)] + factor_sentences(tables) + interaction_sentences(tables)
            + overload_sentences(tables) + omission_sentences(tables) + [best_sentence(tables)])


def question_of(manifest: dict[str, Any], varied: list[str]) -> str:
    spec = manifest.get("spec") or {}
    return str(spec.get("question") or (
        f"How do {', '.join(varied) or 'the configured settings'} change the latency that users of the "
        "Pooch Predictor see (median and tail, with 95% confidence intervals), and which configuration sustains "
        "the most throughput within the p99 budget?"))
