"""The report's answer: planted effects found with their intervals, validity kept out of the numbers.

Every run here is synthetic with known distributions (tests/data/synthetic_run.py): a factor that
doubles the log-normal median doubles every percentile, so its expected p99 ratio is 2 and its
expected p99 difference is the closed-form p99 at 2m minus that at m. A factor that changes
nothing has an expected difference of zero.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.synthetic_run import SyntheticConfig, write_run
from poochlab.experiments.analysis.report import build_report
from poochlab.experiments.analysis.tables import load_tables

RESAMPLES = 400
MEDIAN_US = 1500.0


def _planted_configs() -> list[SyntheticConfig]:
    """batching=on doubles the median (so p99); threads does nothing."""
    configs = []
    for batching, scale in (("off", 1.0), ("on", 2.0)):
        for threads in (1, 2):
            configs.append(SyntheticConfig({"batching": batching, "threads": threads}, median_us=MEDIAN_US * scale,
                                           window_sigma=0.05, throughput_rps=400.0 / scale))
    return configs


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted") / "planted"
    configs = _planted_configs()
    write_run(folder, configs, repetitions=3, windows=4, requests_per_window=600, seed=5,
              manifest={"spec": {"question": "Does batching or the thread count change p99?",
                                 "factors": {"batching": ["off", "on"], "threads": [1, 2]}, "controls": {},
                                 "design": "full_factorial", "repetitions": 3}})
    built = build_report(folder, p99_budget_ms=20.0, resamples=RESAMPLES)
    return built, configs


def _overall(folder: Path, factor: str, metric: str = "p99") -> pd.Series:
    effects = pd.read_csv(folder / "tables" / "effects.csv")
    row = effects[(effects["kind"] == "overall") & (effects["factor"] == factor) & (effects["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


def _findings_text(markdown: str) -> str:
    return markdown.split("## Findings")[1].split("\n## ")[0]


def test_a_factor_that_doubles_p99_is_found_with_an_interval_excluding_zero(planted):
    built, configs = planted
    row = _overall(built.folder, "batching")
    expected_difference = (configs[2].true_percentile_us(99) - configs[0].true_percentile_us(99)) / 1000.0
    assert row["pairs"] == 2
    assert row["difference_ci_low"] > 0
    assert row["difference_ci_low"] <= expected_difference <= row["difference_ci_high"]
    assert row["ratio_ci_low"] <= 2.0 <= row["ratio_ci_high"]
    assert row["verdict"] == "increases"
    findings = _findings_text(built.markdown.read_text())
    sentence = next(line for line in findings.splitlines() if line.startswith("- **batching**"))
    assert "on instead of off **raises p99**" in sentence and "the interval excludes zero" in sentence


def test_a_factor_that_does_nothing_is_called_no_measurable_effect(planted):
    built, _ = planted
    row = _overall(built.folder, "threads")
    assert row["difference_ci_low"] <= 0 <= row["difference_ci_high"]
    assert row["verdict"] == "no measurable effect"
    findings = _findings_text(built.markdown.read_text())
    sentence = next(line for line in findings.splitlines() if line.startswith("- **threads**"))
    assert "2 instead of 1 has **no measurable effect** on p99" in sentence
    assert "the interval includes zero" in sentence
    # Neither factor's effect depends on the other: no interaction is claimed.
    assert "No factor's effect on p99 measurably changes size or sign with another factor" in findings


def test_per_pair_differences_are_differences_of_the_configurations_merged_p99(planted):
    built, _ = planted
    configs = pd.read_csv(built.folder / "tables" / "configs.csv")
    effects = pd.read_csv(built.folder / "tables" / "effects.csv")
    pairs = effects[(effects["kind"] == "pair") & (effects["factor"] == "batching") & (effects["metric"] == "p99")]
    p99 = {(r["batching"], r["threads"]): r["p99_ms"] for _, r in configs.iterrows()}
    for _, pair in pairs.iterrows():
        threads = int(pair["other"].split("=")[1])
        assert pair["difference"] == pytest.approx(p99[("on", threads)] - p99[("off", threads)])
    # The summary is the mean over the pairs.
    assert _overall(built.folder, "batching")["difference"] == pytest.approx(pairs["difference"].mean())


def test_the_notebook_tables_reproduce_the_findings(planted):
    from poochlab.experiments.analysis.findings import findings

    built, _ = planted
    sentences = findings(load_tables(built.folder / "tables"))
    flat = " ".join(_findings_text(built.markdown.read_text()).split())
    for sentence in sentences:
        assert " ".join(sentence.split()) in flat


def _chromium_dom(page: Path, profile: Path) -> str:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


# After load: the first section's id, and whether any table or figure comes before it.
ORDER_CHECK = """<script>
window.addEventListener("load", () => {
  const first = document.querySelector("section");
  const h2 = document.querySelector("h2");
  const before = [...document.querySelectorAll("table, figure, img")].filter(
    e => first.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_PRECEDING);
  document.body.dataset.first = first.id;
  document.body.dataset.firstHeading = h2.textContent;
  document.body.dataset.before = before.length;
});
</script></body>"""


def test_findings_are_the_first_section_in_a_browser(planted, tmp_path):
    built, _ = planted
    page = tmp_path / "checked.html"
    page.write_text(built.html.read_text().replace("</body>", ORDER_CHECK))
    dom = _chromium_dom(page, tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-first="findings"' in body
    assert 'data-first-heading="Findings"' in body
    assert 'data-before="0"' in body
    first = dom.split('<section id="findings">')[1].split("</section>")[0]
    text = " ".join(re.sub(r"<[^>]+>", " ", first).split())
    assert "Does batching or the thread count change p99?" in text
    assert "12 of 12 trials are valid" in text
    assert "raises p99" in text and "no measurable effect" in text
    # Setup and provenance come last, as an appendix.
    sections = re.findall(r'<section id="([^"]+)"', dom)
    assert sections[-1] == "appendix-setup-and-provenance"


def test_an_interaction_that_reverses_an_effect_is_said_plainly(tmp_path):
    folder = tmp_path / "reverses"
    # cache=on halves p99 at load=light but doubles it at load=heavy.
    medians = {("off", "light"): 1000.0, ("on", "light"): 500.0, ("off", "heavy"): 2000.0, ("on", "heavy"): 4000.0}
    configs = [SyntheticConfig({"cache": c, "load": load}, median_us=m) for (c, load), m in medians.items()]
    write_run(folder, configs, repetitions=2, windows=4, requests_per_window=500, seed=9)
    built = build_report(folder, resamples=RESAMPLES)
    findings = _findings_text(built.markdown.read_text())
    assert "**cache's effect on p99 reverses with load**" in findings
    effects = pd.read_csv(folder / "tables" / "effects.csv")
    contrast = effects[(effects["kind"] == "interaction") & (effects["factor"] == "cache")].iloc[0]
    # Ratio 2 at heavy against 0.5 at light: 4 times, from construction.
    assert contrast["ratio_ci_low"] <= 4.0 <= contrast["ratio_ci_high"]
    assert contrast["verdict"] == "depends"


# --- validity -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mixed_validity(tmp_path_factory):
    folder = tmp_path_factory.mktemp("validity") / "validity"
    errors = {"timeout": 3, "connection_refused": 1}
    configs = [
        # Every trial generator-limited: no numbers at all.
        SyntheticConfig({"protocol": "grpc", "load_level": "high", "cache_hit_ratio": 0.8}, median_us=900,
                        hit_ratio=0.8, invalid_repetitions=(1, 2), invalid_reason="sends late: p99 lateness 9 ms",
                        cache_errors_by_reason=errors),
        # One of two trials generator-limited, and 10x slower: it must not reach the numbers.
        SyntheticConfig({"protocol": "grpc", "load_level": "low", "cache_hit_ratio": 0.8}, median_us=900,
                        hit_ratio=0.8, invalid_repetitions=(2,), invalid_scale=10.0,
                        invalid_reason="sends late: p99 lateness 4 ms", cache_errors_by_reason=errors),
        # Valid but the server fell behind: a finding.
        SyntheticConfig({"protocol": "rest", "load_level": "high", "cache_hit_ratio": 0.8}, median_us=5000,
                        hit_ratio=0.8, overloaded_repetitions=(1, 2), planned_rate_rps=900.0, throughput_rps=450.0,
                        cache_errors_by_reason=errors),
        # Closed loop whose corrected histogram is 3x: coordinated omission hides stalls.
        SyntheticConfig({"protocol": "rest", "load_level": "low", "cache_hit_ratio": 0.8}, median_us=800,
                        hit_ratio=0.8, corrected_scale=3.0, cache_errors_by_reason=errors),
    ]
    raw = write_run(folder, configs, repetitions=2, windows=4, requests_per_window=500, seed=13)
    built = build_report(folder, p99_budget_ms=50.0, resamples=RESAMPLES)
    return built, configs, raw


def _configs_table(built) -> pd.DataFrame:
    return pd.read_parquet(built.folder / "tables" / "configs.parquet").set_index("config_id")


def test_headline_counts_valid_trials_and_groups_the_others_by_kind(mixed_validity):
    built, _, _ = mixed_validity
    findings = " ".join(_findings_text(built.markdown.read_text()).split())
    assert "**5 of 8 trials are valid** (2 of them with the server overloaded" in findings
    assert "**3 of 4 configurations have valid trials**" in findings
    assert "3 trials generator-limited (all at protocol=grpc: sends late" in findings
    assert "1 configuration without a valid trial is left out of every result" in findings


def test_a_configuration_without_valid_trials_gives_no_number_anywhere(mixed_validity):
    built, configs, _ = mixed_validity
    dead = configs[0].config_id
    table = _configs_table(built)
    assert np.isnan(table.loc[dead, "p99_ms"]) and not table.loc[dead, "has_valid"]
    assert not table.loc[dead, "pareto_optimal"] and not table.loc[dead, "meets_budget"]
    effects = pd.read_csv(built.folder / "tables" / "effects.csv")
    # protocol is paired only at load_level=low (grpc/high has no valid trial).
    protocol_pairs = effects[(effects["kind"] == "pair") & (effects["factor"] == "protocol") & (effects["metric"] == "p99")]
    assert list(protocol_pairs["other"]) == ["load_level=low"]
    spectrum = pd.read_parquet(built.folder / "tables" / "spectrum.parquet")
    assert dead not in set(spectrum["config_id"])
    markdown = built.markdown.read_text()
    tables = markdown.split("## Tables")[1].split("\n## ")[0]
    assert "load_level=high, protocol=grpc" not in tables  # labels follow the spec's (sorted) factor order
    validity = markdown.split("## Validity")[1].split("\n## ")[0]
    row = next(line for line in validity.splitlines() if line.startswith("| load_level=high, protocol=grpc"))
    assert "generator-limited" in row and "sends late: p99 lateness 9 ms" in row
    assert "Configurations without any valid trial are left out" not in markdown  # no stale wording
    assert "1 configuration without a valid trial is left out (no numbers; listed under Validity)" in markdown


def test_numbers_come_from_valid_trials_only(mixed_validity):
    built, configs, raw = mixed_validity
    partly = configs[1]
    row = _configs_table(built).loc[partly.config_id]
    # raw holds the valid repetition's latencies only; the invalid one was 10x slower.
    expected_p99_ms = np.percentile(raw[partly.config_id], 99) / 1000.0
    assert row["p99_ms"] == pytest.approx(expected_p99_ms, rel=0.02)
    assert row["valid_trials"] == 1 and row["invalid_trials"] == 1
    assert row["requests"] == 4 * 500


def test_server_overload_is_a_valid_finding(mixed_validity):
    built, configs, _ = mixed_validity
    row = _configs_table(built).loc[configs[2].config_id]
    assert row["has_valid"] and row["server_overloaded_trials"] == 2
    findings = " ".join(_findings_text(built.markdown.read_text()).split())
    assert "**The server could not keep up** in 1 configuration" in findings
    assert "load_level=high, protocol=rest (450 of the planned 900 req/s" in findings


def test_cache_errors_by_reason_and_achieved_against_planned_hit_ratio(mixed_validity):
    built, configs, _ = mixed_validity
    table = _configs_table(built)
    # Two valid trials, each with timeout 3 and connection_refused 1.
    assert json.loads(table.loc[configs[3].config_id, "cache_errors_by_reason"]) == {"connection_refused": 2, "timeout": 6}
    assert json.loads(table.loc[configs[1].config_id, "cache_errors_by_reason"]) == {"connection_refused": 1, "timeout": 3}
    markdown = built.markdown.read_text()
    configurations = markdown.split("### Configurations")[1].split("\n### ")[0]
    assert "cache errors by reason" in configurations and "timeout: 6, connection_refused: 2" in configurations
    # The synthetic cache answered int(4000 x 0.8) of 4000 requests per trial: 0.8 achieved, 0.8 planned.
    assert "0.800 (planned 0.800)" in configurations


def test_coordinated_omission_is_flagged_and_both_p99s_shown(mixed_validity):
    built, configs, _ = mixed_validity
    row = _configs_table(built).loc[configs[3].config_id]
    assert row["co_hiding_stalls"]
    assert row["p99_corrected_ms"] == pytest.approx(3 * row["p99_ms"], rel=0.01)
    markdown = built.markdown.read_text()
    configurations = markdown.split("### Configurations")[1].split("\n### ")[0]
    header = next(line for line in configurations.splitlines() if line.startswith("| configuration"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns.index("p99 corrected ms") == columns.index("p99 ms [95% CI]") + 1
    assert "⚠ over 2× p99" in configurations
    assert "**Coordinated omission hides stalls** in 1 configuration" in markdown


def test_each_p99_says_how_many_requests_it_rests_on(mixed_validity):
    built, configs, _ = mixed_validity
    table = _configs_table(built)
    # 2 valid trials x 4 windows x 500 requests = 4000 requests: 40 above the p99; 1 valid trial: 20.
    assert table.loc[configs[3].config_id, "p99_tail_requests"] == 40
    assert table.loc[configs[1].config_id, "p99_tail_requests"] == 20
    configurations = built.markdown.read_text().split("### Configurations")[1].split("\n### ")[0]
    assert "requests above p99" in configurations
