"""A report as a list of blocks, rendered to Markdown (figures as PNG files beside it) and to
one self-contained HTML file (figures embedded as data URIs, no scripts, no network).

    doc = Document("Evaluation of runs/demo")
    doc.heading("Scores")
    doc.table(["metric", "value"], [["BLEU", "31.2"]])
    doc.figure("curves", png_bytes, "Training curves")
    doc.write(Path("report"), metrics)   # report.md, report.html, figures/*.png, metrics.json
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import atomic_write_bytes, atomic_write_text

FIGURES_DIR = "figures"

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.9em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 0.85em; }
p.note { color: #57606a; }
"""

_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$")


@dataclass
class Figure:
    name: str  # file stem, unique within the report
    png: bytes
    caption: str


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    # ---- building ----

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str, note: bool = False) -> None:
        """A paragraph (``note``: de-emphasised, e.g. why a section is absent)."""
        self.blocks.append(("note" if note else "text", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (headers, [[_cell(v) for v in row] for row in rows])))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        if any(kind == "figure" and value.name == name for kind, value in self.blocks):
            raise ValueError(f"figure name {name!r} used twice")
        self.blocks.append(("figure", Figure(name, png, caption)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    @property
    def figures(self) -> list[Figure]:
        return [value for kind, value in self.blocks if kind == "figure"]

    # ---- rendering ----

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out += ["#" * level + " " + text, ""]
            elif kind in ("text", "note"):
                out += [f"_{value}_" if kind == "note" else value, ""]
            elif kind == "table":
                headers, rows = value
                out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
                out.append("|" + "|".join("---:" if _numeric_column(rows, i) else "---"
                                          for i in range(len(headers))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "figure":
                out += [f"![{value.caption}]({FIGURES_DIR}/{value.name}.png)", "",
                        f"*{value.caption}*", ""]
            elif kind == "code":
                out += ["```", value, "```", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
               f"<title>{html.escape(self.title)}</title>", f"<style>{_STYLE}</style>",
               "</head>", "<body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out.append(f"<h{level}>{html.escape(text)}</h{level}>")
            elif kind == "text":
                out.append(f"<p>{html.escape(value)}</p>")
            elif kind == "note":
                out.append(f'<p class="note">{html.escape(value)}</p>')
            elif kind == "table":
                headers, rows = value
                numeric = [_numeric_column(rows, i) for i in range(len(headers))]
                out.append("<table><thead><tr>" + "".join(
                    f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
                for row in rows:
                    out.append("<tr>" + "".join(
                        f'<td{" class=num" if numeric[i] else ""}>{html.escape(c)}</td>'
                        for i, c in enumerate(row)) + "</tr>")
                out.append("</tbody></table>")
            elif kind == "figure":
                data = base64.b64encode(value.png).decode("ascii")
                out.append(f'<figure id="{html.escape(value.name)}"><img alt="'
                           f'{html.escape(value.caption)}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(value.caption)}</figcaption></figure>")
            elif kind == "code":
                out.append(f"<pre>{html.escape(value)}</pre>")
        out += ["</body>", "</html>"]
        return "\n".join(out) + "\n"

    def write(self, directory: Path, metrics: dict[str, Any]) -> list[Path]:
        """Write report.md, report.html, figures/*.png and metrics.json into ``directory``."""
        directory = Path(directory)
        written = []
        for figure in self.figures:
            path = directory / FIGURES_DIR / f"{figure.name}.png"
            atomic_write_bytes(path, figure.png)
            written.append(path)
        for name, text in (("report.md", self.markdown()), ("report.html", self.html()),
                           ("metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")):
            atomic_write_text(directory / name, text)
            written.append(directory / name)
        return written


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _md_cell(text: str) -> str:
    """Table cells cannot hold pipes or line breaks in Markdown."""
    return text.replace("|", "\\|").replace("\n", " ")


def _numeric_column(rows: list[list[str]], index: int) -> bool:
    values = [row[index] for row in rows if index < len(row) and row[index] not in ("", "-")]
    return bool(values) and all(_NUMBER.match(v) for v in values)
