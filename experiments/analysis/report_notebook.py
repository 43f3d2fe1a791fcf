"""The report as a Jupyter notebook: the same text, with figures drawn live from the tidy tables.

The notebook lives in the run folder and reads ``tables/`` next to it through
:func:`~poochlab.experiments.analysis.tables.load_tables`, then calls the same plotting
functions as the HTML report, so a student can change a figure and re-run it.
"""

from __future__ import annotations

import nbformat
from nbformat.notebooknode import NotebookNode

from poochlab.experiments.analysis.report_document import FigureBlock, Heading, ReportDocument
from poochlab.experiments.analysis.report_render import text_block_markdown

SETUP_CODE = """\
from pathlib import Path

from IPython.display import Image, display

from poochlab.experiments.analysis.figures import FIGURES, figure_png
from poochlab.experiments.analysis.tables import load_tables

RUN = Path(".")  # the run folder this notebook was written into
tables = load_tables(RUN / "tables")
tables.configs[["label", "valid_trials", "p50_ms", "p99_ms", "p99_ci_low_ms", "p99_ci_high_ms", "throughput_rps"]]"""

FINDINGS_CODE = """\
from IPython.display import Markdown

from poochlab.experiments.analysis.findings import findings

# The findings above, recomputed from the saved tables alone.
display(Markdown("\\n".join(f"- {sentence}" for sentence in findings(tables))))"""

FIGURE_CODE = """\
figure, caption = FIGURES[{name!r}][1](tables)
display(Image(figure_png(figure)))
print(caption)"""


def to_notebook(document: ReportDocument) -> NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cells = [nbformat.v4.new_markdown_cell(f"# {document.title}\n\nThe tables are loaded from `tables/`; every "
                                           "figure below is drawn from them by the lab's plotting functions."),
             nbformat.v4.new_code_cell(SETUP_CODE)]
    pending: list[str] = []

    def flush() -> None:
        if pending:
            cells.append(nbformat.v4.new_markdown_cell("\n\n".join(pending)))
            pending.clear()

    findings_done = False
    for block in document.blocks:
        if not findings_done and isinstance(block, Heading) and block.level == 2 and pending:
            # The first section is the findings: recompute them from the tables right after it.
            flush()
            cells.append(nbformat.v4.new_code_cell(FINDINGS_CODE))
            findings_done = True
        text = text_block_markdown(block)
        if text is not None:
            pending.append(text)
        elif isinstance(block, FigureBlock):
            flush()
            cells.append(nbformat.v4.new_code_cell(FIGURE_CODE.format(name=block.name)))
    flush()
    notebook.cells = cells
    return notebook
