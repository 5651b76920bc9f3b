"""A static HTML gallery of sweep results: one page, opened from disk, no server, sortable thumbnails.

The tiles are data (a JSON array embedded in the page) laid out by a few lines of inline JavaScript, so
the page has no external request and sorting needs no reload. Extra images (contact sheets, demo
figures) appear under each section. A ``window.onerror`` hook writes any script error into the page's
``data-errors`` attribute, which the browser test reads back.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxviz.io.atomic import atomic_write_bytes
from jaxviz.io.images import contact_sheet, png_bytes

SHEET_COLUMNS = 10
SHEET_ROWS = 10


@dataclasses.dataclass
class Section:
    """One block of the page: a title, tiles (result rows with an ``image`` path) and extra figures."""

    title: str
    tiles: Sequence[dict]
    figures: Sequence[str] = ()   # paths of images relative to the page
    prefix: str = ""              # folder of the tiles' paths relative to the page
    note: str = ""


def write_contact_sheets(out: pathlib.Path, rows: Sequence[dict], preprocessing: dict | None = None,
                         columns: int = SHEET_COLUMNS, rows_per_sheet: int = SHEET_ROWS) -> list[str]:
    """Contact sheets of the runs' PNGs (100 per sheet), captioned unit/label/activation; returns their paths."""
    del preprocessing  # the PNGs are already display images
    per_sheet = columns * rows_per_sheet
    names = []
    for s, start in enumerate(range(0, len(rows), per_sheet)):
        part = rows[start:start + per_sheet]
        grid, caps = [], []
        for r in range(0, len(part), columns):
            cells = part[r:r + columns]
            grid.append([np.asarray(Image.open(out / c["image"]).convert("RGB")) for c in cells])
            caps.append([_caption(c) for c in cells])
        side = max(im.shape[0] for row in grid for im in row)
        scale = max(1, 96 // side)
        sheet = contact_sheet(grid, caps, scale=scale, font_size=10)
        name = f"contact_sheet_{s:03d}.png"
        atomic_write_bytes(out / name, png_bytes(sheet))
        names.append(name)
    return names


def _caption(row: dict) -> str:
    label = row.get("label")
    named = f" {label[:12]}" if label and str(label) != str(row["unit"]) else ""
    value = row.get("scored_activation", row.get("final_activation"))
    return f"{row['unit']}{named}: {value:.3g}" if isinstance(value, (int, float)) else f"{row['unit']}{named}"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:28px} .meta{color:#555;font-size:13px}
.controls{margin:8px 0} .grid{display:flex;flex-wrap:wrap;gap:6px}
.tile{width:132px;background:#fff;border:1px solid #ddd;padding:4px;font-size:11px}
.tile img{width:128px;height:128px;image-rendering:pixelated;display:block;background:#000}
.tile .label{font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile.failed{border-color:#c00} .tile.missed{opacity:.55;background:#eee}
.tile .flags{color:#b00} .tile .why{color:#555;white-space:normal}
.controls .count{margin-left:14px;color:#555} figure img{max-width:100%;image-rendering:pixelated}
"""

_SCRIPT = """
window.onerror = function (msg) { document.body.dataset.errors = (document.body.dataset.errors || '') + msg + ';'; };
function fmt(v) { return (typeof v === 'number') ? v.toPrecision(4) : '-'; }
function draw(section) {
  var data = SECTIONS[section.dataset.index];
  var key = section.querySelector('select').value;
  var desc = section.querySelector('input[type=checkbox]').checked;
  var tiles = data.tiles.slice();
  tiles.sort(function (a, b) {
    var x = a[key], y = b[key];
    if (x === y) return a.unit - b.unit;
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    var r = (typeof x === 'string') ? x.localeCompare(y) : x - y;
    return desc ? -r : r;
  });
  var grid = section.querySelector('.grid');
  grid.textContent = '';
  tiles.forEach(function (t) {
    var div = document.createElement('div');
    var failed = typeof t.failed_step === 'number' && t.failed_step >= 0;
    var missed = t.samples === 0;
    div.className = 'tile' + (failed ? ' failed' : '') + (missed ? ' missed' : '');
    div.dataset.unit = t.unit;
    if (!missed) {
      var img = document.createElement('img');
      img.src = data.prefix + t.image; img.alt = 'unit ' + t.unit; img.loading = 'lazy';
      div.appendChild(img);
    }
    var name = document.createElement('div'); name.className = 'label';
    var named = (t.label !== null && t.label !== undefined && String(t.label) !== String(t.unit)) ? ' ' + t.label : '';
    name.textContent = 'unit ' + t.unit + (t.seed ? ' s' + t.seed : '') + named;
    name.title = name.textContent;
    div.appendChild(name);
    var stats = document.createElement('div');
    stats.textContent = 'best ' + fmt(t.best_activation) + ' final ' + fmt(t.final_activation) + ' rank ' + t.rank;
    div.appendChild(stats);
    var extra = [];
    if (typeof t.percentile === 'number') extra.push('pct ' + t.percentile.toFixed(1));
    if (t.judge_label !== null && t.judge_label !== undefined) extra.push('judge ' + t.judge_label);
    if (typeof t.path_score === 'number') extra.push('path ' + t.path_score.toFixed(2));
    if (extra.length) { var e = document.createElement('div'); e.textContent = extra.join(' \u00b7 '); div.appendChild(e); }
    if (t.flags && t.flags.length) {
      var f = document.createElement('div'); f.className = 'flags';
      f.textContent = t.flags.map(function (x) { return x.name; }).join(', ');
      f.title = t.flags.map(function (x) { return x.reason + '; try: ' + x.fix; }).join('\\n');
      div.appendChild(f);
    }
    if (missed && t.message) { var w = document.createElement('div'); w.className = 'why'; w.textContent = t.message; div.appendChild(w); }
    grid.appendChild(div);
  });
  section.querySelector('.count').textContent = tiles.length + ' tiles';
}
document.querySelectorAll('section[data-index]').forEach(function (s) {
  s.querySelector('select').addEventListener('change', function () { draw(s); });
  s.querySelector('input[type=checkbox]').addEventListener('change', function () { draw(s); });
  draw(s);
});
document.body.dataset.ready = '1';
"""

_SORT_KEYS = (("unit", "unit"), ("best_activation", "best activation"), ("final_activation", "final activation"),
              ("rank", "rank in layer"), ("percentile", "percentile among real inputs"),
              ("path_score", "path score"), ("judge_probability", "judge's confidence"), ("label", "label"),
              ("seconds", "seconds"))
TILE_FIELDS = ("unit", "seed", "label", "final_activation", "best_activation", "rank", "seconds", "failed_step",
               "image", "percentile", "judge_label", "judge_probability", "path_score", "flags", "samples",
               "message")


def _json_for_script(value: Any) -> str:
    # Inside <script>, "</script" ends the element and "<!--" followed by "<script" switches the HTML parser
    # into a state where the real "</script>" no longer ends it (the page's script never runs, no tile is
    # drawn). JSON never needs a raw "<", ">" or "&" outside strings, and inside strings the \u003c-style escapes
    # mean the same characters, so none of them reaches the HTML parser. (ensure_ascii escapes U+2028/9.)
    return (json.dumps(value, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def render_gallery(title: str, sections: Sequence[Section], metadata: dict | None = None) -> str:
    """The page's HTML text."""
    data = [{"prefix": s.prefix, "tiles": [{k: t.get(k) for k in TILE_FIELDS} for t in s.tiles]} for s in sections]
    options = "".join(f'<option value="{k}">{html.escape(v)}</option>' for k, v in _SORT_KEYS)
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             '<link rel="icon" href="data:,">', f"<style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if metadata:
        parts.append('<p class="meta">' + html.escape(", ".join(f"{k}: {v}" for k, v in metadata.items())) + "</p>")
    for i, s in enumerate(sections):
        # Only sections with tiles carry data-index: the script lays those out. A page of one section
        # named as the page (a sweep's) shows its title once.
        heading = "" if s.title == title else f"<h2>{html.escape(s.title)}</h2>"
        parts.append(f'<section{f" data-index={chr(34)}{i}{chr(34)}" if s.tiles else ""}>{heading}')
        if s.note:
            parts.append(f'<p class="meta">{html.escape(s.note)}</p>')
        if s.tiles:
            parts.append(f'<div class="controls">sort by <select>{options}</select> '
                         f'<label><input type="checkbox"> descending</label> <span class="count"></span></div>'
                         f'<div class="grid"></div>')
        for fig in s.figures:
            src = html.escape(s.prefix + fig)
            parts.append(f'<figure><a href="{src}"><img src="{src}" alt="{html.escape(fig)}"></a>'
                         f"<figcaption>{html.escape(fig)}</figcaption></figure>")
        parts.append("</section>")
    parts.append(f"<script>var SECTIONS = {_json_for_script(data)};</script>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


def write_gallery(path: str | os.PathLike, title: str, sections: Sequence[Section],
                  metadata: dict | None = None) -> pathlib.Path:
    """Write the gallery page to ``path`` (atomically); image paths stay relative, so the folder can move."""
    path = pathlib.Path(path)
    atomic_write_bytes(path, render_gallery(title, sections, metadata).encode())
    return path


__all__ = ["Section", "SHEET_COLUMNS", "SHEET_ROWS", "TILE_FIELDS", "write_contact_sheets", "render_gallery",
           "write_gallery"]
