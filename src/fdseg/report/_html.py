"""A tiny self-contained HTML5 page builder: escaped text, tables, embedded PNG figures, atomic writes."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fdseg._io import atomic_write_bytes, atomic_write_text

__all__ = ["MISSING", "Page", "esc", "fmt"]

#: A missing value (NaN, None) in every table, as fdseg's text tables print it.
MISSING = "–"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1b1b1b; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.75rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #555; }
p.missing { color: #8a4b00; background: #fff6e5; padding: 0.4rem 0.6rem; }
pre { background: #f7f7f7; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
""".strip()


def esc(value: object) -> str:
    """HTML-escape ``str(value)`` (quotes included): every string that comes from data goes through here."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 4) -> str:
    """A float with ``digits`` decimals, ints as they are, ``–`` for NaN/None/NA, anything else as text.

    The result is not escaped; pass it through :func:`esc`.
    """
    if value is None or value is pd.NA:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return MISSING if math.isnan(number) else f"{number:.{digits}f}"
    return str(value)  # strings stay as they are: an id such as "01_1" is not a number


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned[:80] or "figure"


class Page:
    """An HTML5 document assembled section by section; figures are embedded and also saved as PNG files.

    Args:
        title: page title (escaped).
        figures_dir: where each figure is also written as ``<name>.png``.
        dpi: resolution of the PNG figures.
    """

    def __init__(self, title: str, *, figures_dir: Path, dpi: int = 100) -> None:
        self.title = title
        self.figures_dir = figures_dir
        self.dpi = dpi
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>"]
        self.figure_paths: list[Path] = []
        self._names: set[str] = set()

    def heading(self, text: str, level: int = 2) -> None:
        """A section heading ``<h{level}>`` (2 or 3)."""
        self.parts.append(f"<h{level}>{esc(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        """A paragraph of escaped text."""
        self.parts.append(f"<p>{esc(text)}</p>")

    def missing(self, text: str) -> None:
        """A highlighted paragraph saying what is missing and what that leaves out."""
        self.parts.append(f'<p class="missing">{esc(text)}</p>')

    def bullets(self, items: Sequence[str]) -> None:
        """An unordered list of escaped items."""
        if items:
            self.parts.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")

    def preformatted(self, text: str) -> None:
        """A ``<pre>`` block of escaped text."""
        self.parts.append(f"<pre>{esc(text)}</pre>")

    def table(self, frame: pd.DataFrame, *, digits: int = 4, caption: str | None = None) -> None:
        """A table of ``frame`` (header = columns); floats get ``digits`` decimals, NaN reads ``–``.

        Columns without any value (all NaN, None or empty text) are left out.
        """
        empty = [
            c
            for c in frame.columns
            if frame[c]
            .map(lambda v: v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) or v == "")
            .all()
        ]
        if empty and len(empty) < len(frame.columns):
            frame = frame.drop(columns=empty)
        head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
        rows = []
        for record in frame.itertuples(index=False):
            cells = []
            for value in record:
                numeric = isinstance(value, (int, float, np.number)) and not isinstance(
                    value, (bool, np.bool_)
                )
                klass = ' class="num"' if numeric else ""
                cells.append(f"<td{klass}>{esc(fmt(value, digits))}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{esc(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def mapping(self, data: Mapping[str, Any], *, digits: int = 4) -> None:
        """A two-column key/value table of a (flattened) mapping."""
        self.table(pd.DataFrame({"key": list(data), "value": list(data.values())}), digits=digits)

    def figure(self, fig: Figure, name: str, caption: str) -> Path:
        """Embed ``fig`` as a base64 PNG and save it to ``figures_dir/<name>.png``; returns that path."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi)
        data = buf.getvalue()
        stem = _safe_name(name)
        unique, i = stem, 2
        while unique in self._names:
            unique, i = f"{stem}_{i}", i + 1
        self._names.add(unique)
        path = self.figures_dir / f"{unique}.png"
        atomic_write_bytes(path, data)
        self.figure_paths.append(path)
        encoded = base64.b64encode(data).decode("ascii")
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
        return path

    def render(self) -> str:
        """The complete HTML5 document."""
        body = "\n".join(self.parts)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(self.title)}</title>\n<style>\n{_STYLE}\n</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
        )

    def write(self, path: Path) -> Path:
        """Write the document to ``path`` atomically and return ``path``."""
        atomic_write_text(path, self.render())
        return path
