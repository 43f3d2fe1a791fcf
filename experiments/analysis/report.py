"""Rebuild everything of a saved run from its saved data: tables, plots, report.md/.html/.ipynb."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from poochlab.experiments.analysis.bootstrap import DEFAULT_RESAMPLES
from poochlab.experiments.analysis.effects import estimate_effects
from poochlab.experiments.analysis.findings import validity_headline
from poochlab.experiments.analysis.figures import FIGURES, figure_png, figure_svg
from poochlab.experiments.analysis.frontier import apply_budget, best_setting_transfer
from poochlab.experiments.analysis.report_document import FigureBlock, build_document
from poochlab.experiments.analysis.report_notebook import to_notebook
from poochlab.experiments.analysis.report_render import to_html, to_markdown
from poochlab.experiments.analysis.run_analysis import analyze
from poochlab.experiments.analysis.saved_run import load_run
from poochlab.experiments.analysis.tables import tables_of, write_tables
from poochlab.experiments.records import write_atomically


@dataclass
class BuiltReport:
    folder: Path
    markdown: Path
    html: Path
    notebook: Path
    tables: list[Path]
    plots: list[Path]
    warnings: list[str] = field(default_factory=list)
    best_label: str | None = None
    headline: str = ""  # the validity headline, plain text

    def __str__(self) -> str:
        """Where to look: the self-contained HTML page."""
        return str(self.html)


def _budget_from(manifest: dict, override: float | None) -> float | None:
    if override is not None:
        return float(override)
    value = manifest.get("p99_budget_ms")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def build_report(run_folder: Path | str, p99_budget_ms: float | None = None,
                 resamples: int = DEFAULT_RESAMPLES) -> BuiltReport:
    """Read ``run_folder``'s manifest and trials; write tables/, plots/ and the three reports."""
    run = load_run(run_folder)
    analysis = analyze(run, resamples=resamples)
    analysis.effects = estimate_effects(analysis)
    budget_ms = _budget_from(run.manifest, p99_budget_ms)
    budget = apply_budget(analysis.configs, budget_ms)  # adds pareto_optimal / meets_budget columns
    transfers = best_setting_transfer(analysis.configs, analysis.varied, budget_ms,
                                      analysis.with_role("load"), analysis.with_role("transfer"))
    tables = tables_of(analysis, budget_ms)
    table_files = write_tables(tables, run.path / "tables")

    import matplotlib

    matplotlib.use("Agg")  # no display on a server; figures are files
    plots_dir = run.path / "plots"
    plots_dir.mkdir(exist_ok=True)
    blocks, plot_files = [], []
    for name, (title, plot) in FIGURES.items():
        figure, caption = plot(tables)
        png = figure_png(figure)
        (plots_dir / f"{name}.png").write_bytes(png)
        (plots_dir / f"{name}.svg").write_bytes(figure_svg(figure))
        plot_files += [plots_dir / f"{name}.png", plots_dir / f"{name}.svg"]
        blocks.append(FigureBlock(name, title, caption, png, f"plots/{name}.png", f"plots/{name}.svg"))

    if any(record.faults for record in run.trials):  # the fault figure reads the records' windows
        from poochlab.experiments.analysis.fault_figure import plot_faults_over_time

        figure, caption = plot_faults_over_time(run.trials)
        png = figure_png(figure)
        (plots_dir / "faults_over_time.png").write_bytes(png)
        (plots_dir / "faults_over_time.svg").write_bytes(figure_svg(figure))
        plot_files += [plots_dir / "faults_over_time.png", plots_dir / "faults_over_time.svg"]
        blocks.append(FigureBlock("faults_over_time", "Faults over time: p99 and answer paths", caption, png,
                                  "plots/faults_over_time.png", "plots/faults_over_time.svg"))
    document = build_document(analysis, budget, transfers, blocks)
    markdown, html, notebook = run.path / "report.md", run.path / "report.html", run.path / "report.ipynb"
    write_atomically(markdown, to_markdown(document))
    write_atomically(html, to_html(document))
    write_atomically(notebook, nbformat.writes(to_notebook(document)))
    return BuiltReport(run.path, markdown, html, notebook, table_files, plot_files, analysis.warnings,
                       None if budget.best is None else str(budget.best["label"]),
                       validity_headline(tables).replace("**", ""))
