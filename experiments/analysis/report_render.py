"""Render a :class:`ReportDocument` as Markdown (figures linked) or one self-contained HTML page.

The HTML embeds every figure as a PNG data URI and carries its own style sheet, so the single
file can be mailed or handed in and still shows everything.
"""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

from poochlab.experiments.analysis.report_document import (
    Bullets,
    FigureBlock,
    Heading,
    Paragraph,
    ReportDocument,
    Table,
    format_number,
)


def _cell(value: object) -> str:
    return format_number(value) if isinstance(value, float) else str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    def clean(value: object) -> str:
        return _cell(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(clean(c) for c in frame.columns) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(clean(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def text_block_markdown(block: object) -> str | None:
    """Markdown of a heading, paragraph, list or table (None for a figure, drawn per format)."""
    if isinstance(block, Heading):
        return "#" * block.level + " " + block.text
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return markdown_table(block.frame)
    return None


def anchor(text: str) -> str:
    """The id of a section heading, as GitHub and the HTML page both make it."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")


def sections(document: ReportDocument) -> list[str]:
    return [block.text for block in document.blocks if isinstance(block, Heading) and block.level == 2]


def contents_markdown(document: ReportDocument) -> str:
    """A one-line table of contents: it sits under the title without pushing the findings down."""
    return "Contents: " + " · ".join(f"[{name}](#{anchor(name)})" for name in sections(document))


def to_markdown(document: ReportDocument) -> str:
    parts = [f"# {document.title}", contents_markdown(document)]
    figure_number = 0
    for block in document.blocks:
        text = text_block_markdown(block)
        if text is not None:
            parts.append(text)
        elif isinstance(block, FigureBlock):
            figure_number += 1
            parts.append(f"![{block.title}]({block.png_file})\n\n*Figure {figure_number}. {block.caption}* "
                         f"([SVG]({block.svg_file}))")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    """The little Markdown the report's prose uses: **bold** and `code`."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #444; }
code { background: #f5f5f5; padding: 0 0.2rem; }
nav.contents { font-size: 0.9rem; color: #444; margin-bottom: 1rem; }
section#findings { background: #f8faff; border-left: 4px solid #3b6fd4; padding: 0.2rem 1rem; }
td { vertical-align: top; }
"""


def to_html(document: ReportDocument) -> str:
    links = " · ".join(f'<a href="#{anchor(name)}">{html.escape(name)}</a>' for name in sections(document))
    body = [f"<h1>{html.escape(document.title)}</h1>", f'<nav class="contents">Contents: {links}</nav>']
    figure_number = 0
    open_section = False
    for block in document.blocks:
        if isinstance(block, Heading) and block.level == 2:
            # Each top-level part is a <section>, so a reader (or a test) can find the first one.
            if open_section:
                body.append("</section>")
            body.append(f'<section id="{anchor(block.text)}"><h2>{html.escape(block.text)}</h2>')
            open_section = True
        elif isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.frame.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                           for row in block.frame.itertuples(index=False))
            body.append(f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, FigureBlock):
            figure_number += 1
            data = base64.b64encode(block.png).decode("ascii")
            body.append(
                f'<figure id="{html.escape(block.name)}"><img alt="{html.escape(block.title)}" '
                f'src="data:image/png;base64,{data}"><figcaption><strong>Figure {figure_number}.</strong> '
                f"{html.escape(block.caption)}</figcaption></figure>")
    if open_section:
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(document.title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
