"""``poochlab report``: the report rebuilt from saved data, opened in a real browser and a real kernel."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from data.synthetic_run import FIXTURE_RUN, FLOOR_MEDIAN_US, SyntheticConfig, write_run
from poochlab.cli import CommandError
from poochlab.experiments.analysis.figures import FIGURES
from poochlab.experiments.analysis.report import build_report
from poochlab.experiments.analysis.report_document import format_number
from poochlab.experiments.commands import report as report_command

RESAMPLES = 300
BUDGET_MS = 5.0
# Findings first, setup and provenance last (an appendix).
SECTIONS = ("Findings", "Figures", "Tables", "Validity", "Threats to validity", "Appendix: setup and provenance")
SUBSECTIONS = ("Effects", "Configurations", "Best configuration under the p99 budget", "The load generator's own floor",
               "Validity warnings", "Setup", "Variables", "Provenance")


@pytest.fixture(scope="session")
def fixture_report(tmp_path_factory):
    """The committed fixture run, copied and rendered once for every test here."""
    folder = tmp_path_factory.mktemp("report") / "analysis_run"
    shutil.copytree(FIXTURE_RUN, folder)
    built = build_report(folder, p99_budget_ms=BUDGET_MS, resamples=RESAMPLES)
    return built, pd.read_csv(folder / "tables" / "configs.csv")


def _chromium_dom(page: Path, profile: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (the Makefile's system-test step installs it)"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


# Appended to a copy of the page: after load, record how many images there are and which failed.
IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.body.dataset.images = images.length;
  document.body.dataset.broken = JSON.stringify(broken);
});
</script></body>"""


def test_html_report_shows_every_image_and_the_key_numbers_in_chromium(fixture_report, tmp_path):
    built, configs = fixture_report
    html = built.html.read_text()
    # Self-contained: every image is inline and nothing is fetched from elsewhere.
    sources = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert len(sources) == len(FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html and "<script" not in html

    page = tmp_path / "checked.html"
    page.write_text(html.replace("</body>", IMAGE_CHECK))
    dom = _chromium_dom(page, tmp_path / "profile")
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert f'data-images="{len(FIGURES)}"' in body
    assert 'data-broken="[]"' in body

    text = re.sub(r"<[^>]+>", " ", dom)
    for p99 in configs["p99_ms"]:
        assert format_number(float(p99)) in text
    within = configs[configs["p99_ms"] <= BUDGET_MS]
    best = within.loc[within["throughput_rps"].idxmax()]
    assert f"Highest throughput under the budget: {best['label']} with {format_number(float(best['throughput_rps']))} requests/s" in " ".join(text.split())
    manifest = json.loads((built.folder / "manifest.json").read_text())
    assert manifest["platform"]["cpu_model"] in text
    assert manifest["git"]["commit"] in text
    assert "gRPC costs more than HTTP/REST" in text


def test_notebook_executes_and_draws_every_figure_from_the_tables(fixture_report):
    built, _ = fixture_report
    notebook = nbformat.read(built.notebook, as_version=4)
    # "python3" is ipykernel's own kernel spec; jupyter_client starts it with this interpreter.
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(built.folder)}}).execute()
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) == len(FIGURES)
    printed = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "Pareto-optimal" in printed  # the captions come out of the same plotting functions
    # The findings, recomputed in the kernel from the saved tables, say what the report says.
    shown = "".join(o.get("data", {}).get("text/markdown", "") for cell in notebook.cells if cell.cell_type == "code"
                    for o in cell.outputs)
    report_findings = " ".join(built.markdown.read_text().split("## Findings")[1].split("\n## ")[0].split())
    recomputed = [" ".join(line[2:].split()) for line in shown.splitlines() if line.startswith("- ")]
    assert len(recomputed) >= 5 and all(sentence in report_findings for sentence in recomputed)
    assert "46 of 48 trials are valid" in shown


def test_markdown_report_has_every_section_figure_and_table(fixture_report):
    built, configs = fixture_report
    markdown = built.markdown.read_text()
    positions = [markdown.index(f"\n## {section}\n") for section in SECTIONS]
    assert positions == sorted(positions)
    for section in SUBSECTIONS:
        assert f"\n### {section}\n" in markdown
    for name in FIGURES:
        assert f"(plots/{name}.png)" in markdown and (built.folder / "plots" / f"{name}.png").stat().st_size > 0
        assert (built.folder / "plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    assert markdown.count("*Figure ") == len(FIGURES)
    trials = pd.read_parquet(built.folder / "tables" / "trials.parquet")
    # 16 configurations x 3 repetitions, one of which failed; every row carries the schema version.
    assert len(trials) == 48 and len(configs) == 16
    assert (trials["status"] == "failed").sum() == 1
    # The fixture's records are schema 1; the tables it gives are the current table schema.
    assert set(trials["schema_version"]) == {2} and set(configs["schema_version"]) == {2}
    for factor in ("protocol", "cache", "model_variant", "load_level"):
        assert factor in trials.columns and factor in configs.columns
    # The fixture's invalid and failed trials are named among the validity warnings.
    warnings = markdown.split("### Validity warnings")[1].split("## Threats")[0]
    assert "failed: server exited with code -9" in warnings and "generator CPU above 80%" in warnings
    assert "model_variant stay best" in markdown
    # What a latency spans is said where its limits are.
    threats = markdown.split("## Threats to validity")[1].split("\n## ")[0]
    assert "from the request's send (its scheduled time in an open loop) to the answer's arrival" in threats
    # The fixture has no corrected histograms: a column that would be all blanks is left out.
    assert "p99 corrected ms" not in markdown and "cache hit ratio" in markdown


def test_generator_floor_is_read_from_its_record_and_from_its_summary(fixture_report):
    built, _ = fixture_report
    section = built.markdown.read_text().split("## The load generator's own floor")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in section.splitlines() if "-fast-json-" in line}
    # gRPC's floor comes from its saved record, REST's from the manifest's summary; both were drawn
    # with medians of 0.47 and 0.21 ms.
    assert float(rows["grpc-fast-json-x1-users2"][1]) == pytest.approx(FLOOR_MEDIAN_US["grpc"] / 1000, rel=0.05)
    assert float(rows["rest-fast-json-x1-users2"][1]) == pytest.approx(FLOOR_MEDIAN_US["rest"] / 1000, rel=0.05)
    assert "less than twice the generator's floor" in section


def _degraded_configs() -> list[SyntheticConfig]:
    return [SyntheticConfig({"protocol": "rest"}, median_us=900), SyntheticConfig({"protocol": "grpc"}, median_us=1300)]


def test_missing_optional_data_degrades_with_notes(tmp_path):
    folder = tmp_path / "bare"
    # One repetition, one window per trial, no cache, no server timing, no generator floor, no budget.
    write_run(folder, _degraded_configs(), repetitions=1, windows=1, requests_per_window=200, server_timing=False,
              manifest={"generator_floor": None, "versions": None, "platform": None})
    built = build_report(folder, resamples=RESAMPLES)
    markdown = built.markdown.read_text()
    assert "one repetition per configuration" in markdown
    assert "no server-side timing recorded" in markdown
    assert "no cache in this run" in markdown
    assert "records no generator floor" in markdown
    assert "No p99 budget was given" in markdown
    assert "Not recorded in this run, drawn as zero: server queue, server compute" in markdown
    configs = pd.read_csv(folder / "tables" / "configs.csv")
    assert configs["p99_ci_low_ms"].isna().all()
    assert set(configs["ci_note"]) == {"no interval: fewer than 2 windows"}


def test_unreadable_trial_files_are_named_and_skipped(tmp_path):
    folder = tmp_path / "damaged"
    write_run(folder, _degraded_configs(), repetitions=2, windows=3, requests_per_window=200)
    (folder / "trials" / "truncated.json").write_text('{"run_id": "damaged", "trial_')
    broken = json.loads(next((folder / "trials").glob("c*-r1.json")).read_text())
    broken["trial_id"] = "badhistogram"
    broken["windows"][0]["histogram"] = "not-an-hdr-histogram"
    (folder / "trials" / "badhistogram.json").write_text(json.dumps(broken))
    built = build_report(folder, resamples=RESAMPLES)
    assert any("truncated.json: not a trial record" in w for w in built.warnings)
    assert any("badhistogram.json: window 0: not a valid hdrh histogram" in w for w in built.warnings)
    markdown = built.markdown.read_text()
    assert "truncated.json" in markdown and "badhistogram.json" in markdown
    # The readable trials are all there: 2 configurations x 2 repetitions.
    assert len(pd.read_csv(folder / "tables" / "trials.csv")) == 4


def _run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    return report_command.run(parser.parse_args(argv))


def test_report_command_takes_the_budget_from_the_manifest(tmp_path, capsys):
    folder = tmp_path / "budgeted"
    write_run(folder, _degraded_configs(), repetitions=2, windows=3, requests_per_window=300,
              manifest={"p99_budget_ms": 2.5})
    assert _run_command([str(folder), "--resamples", str(RESAMPLES)]) == 0
    out = capsys.readouterr().out
    # rest's p99 is about 2.0 ms (median 0.9 ms x e^(0.35 x 2.33)), gRPC's about 2.9 ms.
    assert "best configuration under the p99 budget: protocol=rest" in out
    assert "4 of 4 trials are valid; 2 of 2 configurations have valid trials" in out  # 2 configs x 2 repetitions
    assert f"report:   {folder / 'report.md'}" in out
    assert "p99 at most 2.5 ms" in (folder / "report.md").read_text()


def test_report_command_names_the_missing_manifest(tmp_path):
    (tmp_path / "trials").mkdir()
    with pytest.raises(CommandError, match=re.escape(str(tmp_path / "manifest.json")) + ": missing"):
        _run_command([str(tmp_path)])
    with pytest.raises(CommandError, match="must be positive"):
        _run_command([str(tmp_path), "--p99-budget-ms", "0"])


def test_a_run_where_every_trial_failed_still_gets_a_report(tmp_path):
    folder = tmp_path / "all_failed"
    configs = [SyntheticConfig({"protocol": p}, median_us=900, failed_repetitions=(1, 2)) for p in ("rest", "grpc")]
    write_run(folder, configs, repetitions=2)
    built = build_report(folder, p99_budget_ms=BUDGET_MS, resamples=RESAMPLES)
    markdown = built.markdown.read_text()
    assert "no trial of this run succeeded" in markdown
    assert "No configuration meets the p99 budget" in markdown
    assert len(built.warnings) == 4 and all("server exited with code -9" in w for w in built.warnings)
    assert all((folder / "plots" / f"{name}.png").stat().st_size > 0 for name in FIGURES)


def test_closed_loop_corrected_p99_is_reported_beside_the_measured_one(tmp_path):
    folder = tmp_path / "corrected"
    write_run(folder, [SyntheticConfig({"protocol": "rest"}, median_us=900, corrected_scale=3.0)], repetitions=2)
    build_report(folder, resamples=RESAMPLES)
    configs = pd.read_csv(folder / "tables" / "configs.csv")
    assert configs["p99_corrected_ms"].iloc[0] == pytest.approx(3 * configs["p99_ms"].iloc[0], rel=0.01)
    assert "p99 corrected ms" in (folder / "report.md").read_text()


def test_factor_values_of_mixed_types_survive_parquet(tmp_path):
    folder = tmp_path / "batching"
    batching_sets = ["off", {"max_batch_size": 8, "batch_timeout_micros": 500}, 8]
    write_run(folder, [SyntheticConfig({"batching": b}, median_us=900) for b in batching_sets], repetitions=2)
    build_report(folder, resamples=RESAMPLES)
    configs = pd.read_parquet(folder / "tables" / "configs.parquet")
    assert sorted(configs["batching"]) == sorted(['{"batch_timeout_micros":500,"max_batch_size":8}', "8", "off"])
    # Controls are columns too, with their single value, but not independent variables.
    assert set(configs["server_threads"]) == {2}
    assert json.loads((folder / "tables" / "schema.json").read_text())["factors"] == ["batching"]


def test_the_report_names_what_set_the_load_limit(tmp_path):
    folder = tmp_path / "calibrated"
    calibration = {"capacity_rps": 1800.0, "limited_by": "generator grpc-grpcio-protobuf-x1",
                   "levels": {"light": 0.25, "high": 0.85}, "reference": "protocol=rest",
                   "servers": [{"configuration": "protocol=rest, cache=off", "capacity_rps": 5000.0, "valid": True}],
                   "generator_paths": [{"path": "grpc-grpcio-protobuf-x1", "limit_rps": 1800.0, "bounded": True},
                                       {"path": "rest-lean-row-x1", "limit_rps": 1530.0, "bounded": False}]}
    write_run(folder, _degraded_configs(), repetitions=1, windows=1, requests_per_window=200,
              manifest={"calibration": calibration})
    markdown = build_report(folder, resamples=RESAMPLES).markdown.read_text()
    # 0.25 x 1,800 = 450 and 0.85 x 1,800 = 1,530 req/s.
    assert ("The highest load this machine could drive validly was 1,800 req/s, set by generator "
            "grpc-grpcio-protobuf-x1; load levels: light 450 req/s (25%), high 1,530 req/s (85%).") in markdown
    assert "server: protocol=rest, cache=off" in markdown and "≥ 1,530" in markdown
