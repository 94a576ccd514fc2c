"""A self-contained ``report.html`` from the report's markdown: tables, text and figures in one file.

Only the markdown the report writes is supported (headings, paragraphs, bullet lists, pipe
tables, ``![alt](file.png)`` images, ``code`` spans and **bold**). Images are embedded as base64
data URIs, so the file opens anywhere, including MLflow's artifact viewer.

Example:
    >>> "<table>" in to_html("| a | b |\\n|---|---|\\n| 1 | 2 |\\n", Path("."))
    True
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")
_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3}code{background:#f3f3f3;padding:0 3px}img{max-width:100%;border:1px solid #eee}
.better{color:#1a7f37;font-weight:600}.worse{color:#c62828;font-weight:600}"""


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"\b(better|worse)\b", r'<span class="\1">\1</span>', out)
    return out


def _image(alt: str, src: str, folder: Path) -> str:
    path = folder / src
    if not path.is_file():
        return f"<p><i>(figure {html.escape(src)} was not written)</i></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows if not re.match(r"^\|[-| :]+\|$", r)]
    head, body = cells[0], cells[1:]
    out = ["<table><thead><tr>", *(f"<th>{_inline(c)}</th>" for c in head), "</tr></thead><tbody>"]
    for row in body:
        out += ["<tr>", *(f"<td>{_inline(c)}</td>" for c in row), "</tr>"]
    return "".join(out + ["</tbody></table>"])


def to_html(markdown: str, folder: Path, title: str = "ablation report") -> str:
    """Converts the report's markdown to one HTML page; images are read from ``folder``."""
    parts: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            parts.append(_table(block))
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            parts.append("<ul>" + "".join(items) + "</ul>")
            continue
        heading = re.match(r"^(#{1,4}) (.*)$", line)
        image = _IMAGE.match(line.strip())
        if heading:
            level = len(heading.group(1))
            parts.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            parts.append(_image(image["alt"], image["src"], folder))
        elif line.strip():
            parts.append(f"<p>{_inline(line)}</p>")
        i += 1
    body = "\n".join(parts)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")
