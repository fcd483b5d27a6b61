"""What every part of the HTML report shares: escaping, number formats, element ids, colours per series.

Also the plain-text formats the Markdown report and the verdict use (:func:`ms`, :func:`size_text`), so a
number reads the same in every file.
"""

from __future__ import annotations

import json
import re
from functools import cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebench.bench.contracts.files import atomic_write_text, writing
from edgebench.reports.svg import MARKERS, PALETTE

if TYPE_CHECKING:  # annotations only: tables imports the robustness and GPU sections, which use this module
    from edgebench.reports.tables import Row


@cache
def asset(name: str) -> str:
    """A file of ``reports/assets/`` (the page's stylesheet and script), as text."""
    return (resources.files("edgebench.reports") / "assets" / name).read_text(encoding="utf-8")


def static_page(title: str, body: list[str]) -> str:
    """A self-contained page with the run report's stylesheet and no script (the fit and sensitivity
    reports), so every report reads alike."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>\n{asset('report.css')}</style></head>\n"
            "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n")


def write_static_report(out_dir: Path, files: dict[str, tuple[str, str]]) -> dict[str, Path]:
    """Write a static report's files (``kind -> (file name, text)``, in that order) into ``out_dir``,
    each atomically; returns their paths by kind. A full disk is CannotWrite."""
    out_dir = Path(out_dir)
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, (name, _) in files.items()}
    for kind, (_, text) in files.items():
        atomic_write_text(paths[kind], text)
    return paths


def e(v: Any) -> str:
    """``v`` as HTML text or attribute value."""
    return escape(str(v), quote=True)


def sortable_table(heads: list[str], body: list[list[str]]) -> str:
    """A plain table of escaped text cells that the page's script sorts by a header click."""
    th = "".join(f"<th>{e(h)}</th>" for h in heads)
    trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in body)
    return f'<div class="table-wrap"><table class="sortable"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'


def na(v: Any, spec: str = "", suffix: str = "") -> str:
    """``v`` formatted, or ``-`` when it was not measured."""
    return "-" if v is None else f"{format(v, spec)}{suffix}"


def ms(v: float | None) -> str:
    """A latency in ms with as many decimals as its size deserves."""
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else (f"{v:.2f}" if v < 100 else f"{v:.1f}")


def size_text(n: int | float | None) -> str:
    """A file size in KiB or MiB."""
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.2f} MiB"


def slug(text: str) -> str:
    """``text`` as an id or class name fragment."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def series_key(r: Row) -> str:
    """What one colour stands for in every plot."""
    return f"{r.recipe} / {r.backend} / {r.precision}"


class Ids:
    """Unique element ids for one page: the slug of a name, numbered from 2 when it repeats."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, base: str) -> str:
        cid, i = slug(base), 2
        out = cid
        while out in self.used:
            out, i = f"{cid}-{i}", i + 1
        self.used.add(out)
        return out


def colors(rows: list[Row]) -> dict[str, str]:
    """One palette colour per series (recipe / backend / precision), in the order the rows first show them."""
    keys = list(dict.fromkeys(series_key(r) for r in rows))
    return {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)}


def batch_markers(rows: list[Row]) -> dict[int, str]:
    """One marker shape per batch size."""
    return {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(sorted({r.batch for r in rows}))}


def tip(r: Row) -> str:
    """A mark's tooltip: the cell and its main numbers."""
    return (f"{r.cell_key}\np50 {ms(r.p50_ms)} ms, p90 {ms(r.p90_ms)} ms, p99 {ms(r.p99_ms)} ms\n"
            f"top-1 {na(r.top1, '.2%')}, peak RSS {na(r.peak_rss_mib, '.0f', ' MiB')}, size {size_text(r.size_bytes)}")


def td(text: str, sort: Any = None, cls: str = "") -> str:
    """A table cell with the value its column sorts by (``data-sort``)."""
    s = "" if sort is None else f' data-sort="{e(sort)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{s}{c}>{text}</td>"


def figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>"


def json_script(data: Any, cls: str) -> str:
    """``data`` as an inline JSON block for scripts and tests (``</`` escaped so it cannot close the tag)."""
    text = json.dumps(data, default=str).replace("</", "<\\/")
    return f'<script type="application/json" class="{cls}">{text}</script>'
