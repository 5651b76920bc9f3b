"""Tables as files: a static HTML page of rows (with image cells), CSV and JSON lines, all written atomically."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import pathlib
from typing import Any, Sequence

from jaxviz.io.atomic import atomic_write_bytes

_STYLE = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:middle}"
          "img{image-rendering:pixelated}.meta{color:#555}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def render_table_page(title: str, columns: Sequence[str], rows: Sequence[dict], image_columns: Sequence[str] = (),
                      note: str = "", figures: Sequence[str] = ()) -> str:
    """One page: a title, a note, figures (image paths relative to the page), then a table of ``rows``.

    Cells of ``image_columns`` hold an image path relative to the page and are shown as images.
    """
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
             f'<link rel="icon" href="data:,"><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>']
    if note:
        parts.append(f'<p class="meta">{html.escape(note)}</p>')
    for fig in figures:
        src = html.escape(fig)
        parts.append(f'<figure><img src="{src}" alt="{src}"><figcaption>{src}</figcaption></figure>')
    parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if c in image_columns and value:
                src = html.escape(str(value))
                cells.append(f'<td><a href="{src}"><img src="{src}" alt="{src}"></a></td>')
            else:
                cells.append(f"<td>{html.escape(_cell(value))}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


def write_table_page(path: str | os.PathLike, title: str, columns: Sequence[str], rows: Sequence[dict],
                     image_columns: Sequence[str] = (), note: str = "", figures: Sequence[str] = ()) -> pathlib.Path:
    """Write ``render_table_page`` to ``path`` atomically."""
    path = pathlib.Path(path)
    atomic_write_bytes(path, render_table_page(title, columns, rows, image_columns, note, figures).encode())
    return path


def csv_bytes(columns: Sequence[str], rows: Sequence[dict]) -> bytes:
    """``rows`` as CSV with a header line (lists joined by spaces)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([" ".join(map(str, v)) if isinstance(v, (list, tuple)) else ("" if v is None else v)
                         for v in (row.get(c) for c in columns)])
    return buf.getvalue().encode()


def jsonl_bytes(rows: Sequence[dict]) -> bytes:
    """One JSON object per line."""
    return "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows).encode()


__all__ = ["render_table_page", "write_table_page", "csv_bytes", "jsonl_bytes"]
