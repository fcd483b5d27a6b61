"""Small hand-written SVG charts for the HTML report: scatter and line plots with linear or log axes.

No plotting library and no script: each chart is an inline ``<svg>`` string with a tooltip (``<title>``)
on every mark, so the report opens anywhere without network access and prints as it looks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

# Colour-blind-friendly qualitative palette (Okabe-Ito, then Tableau extras).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C564B", "#332288",
           "#999933", "#882255", "#44AA99", "#7F7F7F"]
MARKERS = ["circle", "square", "triangle", "diamond", "triangle-down", "plus"]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis: decades, then 1-2-5 steps, then every integer multiple when the range is narrow."""
    if lo <= 0 or hi <= lo:
        return [lo] if lo > 0 else []
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mults in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mults if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 3:
            return [float(f"{t:.12g}") for t in ticks]
    return [float(f"{t:.12g}") for t in nice_ticks(lo, hi, 4)]


def fmt_num(v: float) -> str:
    """A compact axis label: 0.05, 1.5, 20, 1.2k, 3M."""
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 1:
        return f"{v:.4g}"
    return f"{v:.3g}"


def tick_labels(ticks: list[float], fmt: Callable[[float], str]) -> list[str]:
    """``fmt`` of every tick, or, where that makes two labels equal (0.998 and 1 both "1"), as many fixed
    decimals as the tick step needs."""
    labels = [fmt(t) for t in ticks]
    if len(set(labels)) == len(labels) or len(ticks) < 2:
        return labels
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:])) or 1.0
    decimals = max(0, -math.floor(math.log10(step))) + (0 if f"{step:g}".rstrip("0").endswith(("1", "2", "5")) else 1)
    return [f"{t:.{decimals}f}" for t in ticks]


def _marker_path(kind: str, x: float, y: float, r: float) -> str:
    if kind == "square":
        s = r * 0.9
        return f"M{x - s:.1f},{y - s:.1f}h{2 * s:.1f}v{2 * s:.1f}h{-2 * s:.1f}z"
    if kind == "triangle":
        return f"M{x:.1f},{y - r * 1.15:.1f}L{x + r:.1f},{y + r * 0.7:.1f}L{x - r:.1f},{y + r * 0.7:.1f}z"
    if kind == "triangle-down":
        return f"M{x:.1f},{y + r * 1.15:.1f}L{x + r:.1f},{y - r * 0.7:.1f}L{x - r:.1f},{y - r * 0.7:.1f}z"
    if kind == "diamond":
        return f"M{x:.1f},{y - r * 1.2:.1f}L{x + r:.1f},{y:.1f}L{x:.1f},{y + r * 1.2:.1f}L{x - r:.1f},{y:.1f}z"
    if kind == "plus":
        w = r * 0.45
        return (f"M{x - w:.1f},{y - r:.1f}h{2 * w:.1f}v{r - w:.1f}h{r - w:.1f}v{2 * w:.1f}h{-(r - w):.1f}v{r - w:.1f}"
                f"h{-2 * w:.1f}v{-(r - w):.1f}h{-(r - w):.1f}v{-2 * w:.1f}h{r - w:.1f}z")
    # circle as a path, so every mark is one element type
    return f"M{x - r:.1f},{y:.1f}a{r:.1f},{r:.1f} 0 1,0 {2 * r:.1f},0a{r:.1f},{r:.1f} 0 1,0 {-2 * r:.1f},0"


@dataclass
class _Points:
    xs: list[float]
    ys: list[float]
    color: str
    marker: str
    filled: list[bool]
    titles: list[str]
    labels: list[str]
    size: float


@dataclass
class _Line:
    xs: list[float]
    ys: list[float]
    color: str
    width: float
    dash: str | None
    title: str
    opacity: float


@dataclass
class _Legend:
    text: str
    color: str
    kind: str  # marker name, "line", "hollow", "dash"
    dash: str | None = None


# Margins of the plot area inside a chart (px): room for tick labels, axis labels and the title.
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 18, 30, 46


@dataclass
class _Frame:
    """Where the plot area lies in the SVG and which data range it shows."""

    left: int
    top: int
    pw: int
    ph: int
    x0: float
    x1: float
    y0: float
    y1: float
    xlog: bool
    ylog: bool

    def tx(self, v: float) -> float:
        if self.xlog:
            return self.left + (math.log10(max(v, 1e-300)) - math.log10(self.x0)) / (math.log10(self.x1) - math.log10(self.x0)) * self.pw
        return self.left + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def ty(self, v: float) -> float:
        if self.ylog:
            return self.top + self.ph - (math.log10(max(v, 1e-300)) - math.log10(self.y0)) / (math.log10(self.y1) - math.log10(self.y0)) * self.ph
        return self.top + self.ph - (v - self.y0) / (self.y1 - self.y0) * self.ph

    def shows(self, x: float, y: float) -> bool:
        """A finite point, positive on a log axis."""
        return math.isfinite(x) and math.isfinite(y) and (x > 0 or not self.xlog) and (y > 0 or not self.ylog)


@dataclass
class Chart:
    """One chart. Add marks with :meth:`points` and :meth:`line`, then :meth:`render` to an SVG string."""

    chart_id: str
    title: str
    xlabel: str
    ylabel: str
    width: int = 520
    height: int = 330
    xlog: bool = False
    ylog: bool = False
    xfmt: Callable[[float], str] = fmt_num
    yfmt: Callable[[float], str] = fmt_num
    xlim: tuple[float | None, float | None] = (None, None)
    ylim: tuple[float | None, float | None] = (None, None)
    ybounds: tuple[float, float] | None = None  # the padded y range never leaves these (e.g. 0-100 %)
    _points: list[_Points] = field(default_factory=list)
    _lines: list[_Line] = field(default_factory=list)
    _hlines: list[tuple[float, str, str]] = field(default_factory=list)
    _legend: list[_Legend] = field(default_factory=list)

    def points(self, xs: Sequence[float], ys: Sequence[float], color: str, marker: str = "circle", filled: Sequence[bool] | bool = True,
               titles: Sequence[str] | None = None, labels: Sequence[str] | None = None, size: float = 4.5) -> None:
        n = len(xs)
        fill = [filled] * n if isinstance(filled, bool) else list(filled)
        self._points.append(_Points(list(map(float, xs)), list(map(float, ys)), color, marker, fill,
                                    list(titles or [""] * n), list(labels or [""] * n), size))

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str, width: float = 1.8, dash: str | None = None,
             title: str = "", opacity: float = 1.0) -> None:
        self._lines.append(_Line(list(map(float, xs)), list(map(float, ys)), color, width, dash, title, opacity))

    def hline(self, y: float, text: str, color: str = "#888") -> None:
        self._hlines.append((y, text, color))

    def legend(self, text: str, color: str, kind: str = "circle", dash: str | None = None) -> None:
        self._legend.append(_Legend(text, color, kind, dash))

    # -- layout -------------------------------------------------------------------------------
    def _domain(self, values: list[float], log: bool, lim: tuple[float | None, float | None]) -> tuple[float, float]:
        vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        lo = lim[0] if lim[0] is not None else (min(vals) if vals else (1.0 if log else 0.0))
        hi = lim[1] if lim[1] is not None else (max(vals) if vals else (10.0 if log else 1.0))
        if log:
            lo, hi = max(lo, 1e-12), max(hi, 1e-12)
            if hi <= lo:
                lo, hi = lo / 2, hi * 2
            pad = (math.log10(hi) - math.log10(lo)) * 0.06
            return (lo if lim[0] is not None else 10 ** (math.log10(lo) - pad),
                    hi if lim[1] is not None else 10 ** (math.log10(hi) + pad))
        if hi <= lo:
            d = abs(lo) * 0.02 or 1.0
            lo, hi = lo - d, hi + d
        pad = (hi - lo) * 0.06
        return (lo if lim[0] is not None else lo - pad, hi if lim[1] is not None else hi + pad)

    def _legend_rows(self, avail: float) -> list[list[tuple[_Legend, float]]]:
        rows: list[list[tuple[_Legend, float]]] = [[]]
        used = 0.0
        for item in self._legend:
            w = 22 + 6.2 * len(item.text) + 14
            if rows[-1] and used + w > avail:
                rows.append([])
                used = 0.0
            rows[-1].append((item, w))
            used += w
        return rows if rows[0] else []

    def render(self) -> str:
        """The chart as one ``<svg>`` element: frame and title, axes with ticks, the marks, the legend."""
        legend_rows = self._legend_rows(self.width - _LEFT - _RIGHT)
        height = self.height + 18 * len(legend_rows) + (6 if legend_rows else 0)
        f = self._frame()
        out = self._head(f, height) + self._axes(f)
        out.append(f'<g class="data" clip-path="url(#{escape(self.chart_id)}-clip)">')
        out += self._hline_marks(f) + self._line_marks(f) + self._point_marks(f)
        out.append("</g>")
        out += self._legend_marks(legend_rows)
        out.append("</svg>")
        return "\n".join(out)

    def _frame(self) -> _Frame:
        """The plot area and the data domain it shows (padded, bounded by ``ybounds``)."""
        xs = [x for p in self._points for x in p.xs] + [x for ln in self._lines for x in ln.xs]
        ys = [y for p in self._points for y in p.ys] + [y for ln in self._lines for y in ln.ys] + [h[0] for h in self._hlines]
        x0, x1 = self._domain(xs, self.xlog, self.xlim)
        y0, y1 = self._domain(ys, self.ylog, self.ylim)
        if self.ybounds is not None:
            y0, y1 = max(y0, self.ybounds[0]), min(y1, self.ybounds[1])
            if y1 <= y0:
                y0, y1 = self.ybounds
        return _Frame(_LEFT, _TOP, self.width - _LEFT - _RIGHT, self.height - _TOP - _BOTTOM, x0, x1, y0, y1, self.xlog, self.ylog)

    def _head(self, f: _Frame, height: int) -> list[str]:
        cid = escape(self.chart_id)
        return [f'<svg class="chart" id="{cid}" xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height}" '
                f'viewBox="0 0 {self.width} {height}" role="img" aria-label="{escape(self.title)}">',
                f"<title>{escape(self.title)}</title>",
                f'<defs><clipPath id="{cid}-clip"><rect x="{f.left}" y="{f.top}" width="{f.pw}" height="{f.ph}"/></clipPath></defs>',
                f'<rect class="frame" x="{f.left}" y="{f.top}" width="{f.pw}" height="{f.ph}" fill="#fff" stroke="#bbb"/>',
                f'<text class="chart-title" x="{f.left}" y="18" font-size="13" font-weight="600" fill="#222">{escape(self.title)}</text>']

    def _axes(self, f: _Frame) -> list[str]:
        """Grid lines, tick labels and the axis labels."""
        left, top, pw, ph = f.left, f.top, f.pw, f.ph
        xt = log_ticks(f.x0, f.x1) if self.xlog else nice_ticks(f.x0, f.x1, 6)
        yt = log_ticks(f.y0, f.y1) if self.ylog else nice_ticks(f.y0, f.y1, 5)
        g = ['<g class="axes" font-size="10.5" fill="#444">']
        xt = [v for v in xt if f.x0 <= v <= f.x1]
        yt = [v for v in yt if f.y0 <= v <= f.y1]
        for v, text in zip(xt, tick_labels(xt, self.xfmt)):
            x = f.tx(v)
            g.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
            g.append(f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle">{escape(text)}</text>')
        for v, text in zip(yt, tick_labels(yt, self.yfmt)):
            y = f.ty(v)
            g.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#eee"/>')
            g.append(f'<text x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{escape(text)}</text>')
        g.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 33}" text-anchor="middle" font-size="11.5" fill="#222">{escape(self.xlabel)}</text>')
        g.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" font-size="11.5" fill="#222">{escape(self.ylabel)}</text>')
        g.append("</g>")
        return g

    def _hline_marks(self, f: _Frame) -> list[str]:
        out = []
        for y, text, color in self._hlines:
            yy = f.ty(y)
            out.append(f'<line class="refline" x1="{f.left}" y1="{yy:.1f}" x2="{f.left + f.pw}" y2="{yy:.1f}" stroke="{color}" stroke-dasharray="4 3"/>'
                       f'<text x="{f.left + f.pw - 4}" y="{yy - 4:.1f}" text-anchor="end" font-size="10" fill="{color}">{escape(text)}</text>')
        return out

    def _line_marks(self, f: _Frame) -> list[str]:
        out = []
        for ln in self._lines:
            pts = [(f.tx(x), f.ty(y)) for x, y in zip(ln.xs, ln.ys) if f.shows(x, y)]
            if len(pts) < 2:
                continue
            d = "M" + "L".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            dash = f' stroke-dasharray="{ln.dash}"' if ln.dash else ""
            title = f"<title>{escape(ln.title)}</title>" if ln.title else ""
            out.append(f'<path class="series" d="{d}" fill="none" stroke="{ln.color}" stroke-width="{ln.width}" '
                       f'stroke-opacity="{ln.opacity}" stroke-linejoin="round"{dash}>{title}</path>')
        return out

    def _point_marks(self, f: _Frame) -> list[str]:
        out = []
        for p in self._points:
            for x, y, filled, title, lab in zip(p.xs, p.ys, p.filled, p.titles, p.labels):
                if not f.shows(x, y):
                    continue
                px, py = f.tx(x), f.ty(y)
                fill = p.color if filled else "#fff"
                out.append(f'<path class="mark" d="{_marker_path(p.marker, px, py, p.size)}" fill="{fill}" stroke="{p.color}" stroke-width="1.6">'
                           + (f"<title>{escape(title)}</title>" if title else "") + "</path>")
                if lab:
                    out.append(_point_label(f, px, py, p.size, lab))
        return out

    def _legend_marks(self, legend_rows: list[list[tuple[_Legend, float]]]) -> list[str]:
        out = []
        y = self.height + 4
        for row in legend_rows:
            x = float(_LEFT)
            for item, w in row:
                cy = y + 5
                if item.kind in ("line", "dash"):
                    dash = f' stroke-dasharray="{item.dash or "5 3"}"' if item.kind == "dash" or item.dash else ""
                    out.append(f'<line x1="{x:.1f}" y1="{cy}" x2="{x + 16:.1f}" y2="{cy}" stroke="{item.color}" stroke-width="2.2"{dash}/>')
                else:
                    hollow = item.kind.startswith("hollow")  # "hollow": an open circle; "hollow:MARKER": an open MARKER
                    kind = item.kind.split(":", 1)[1] if ":" in item.kind else ("circle" if hollow else item.kind)
                    out.append(f'<path d="{_marker_path(kind, x + 8, cy, 4.2)}" fill="{"#fff" if hollow else item.color}" stroke="{item.color}" stroke-width="1.6"/>')
                out.append(f'<text x="{x + 21:.1f}" y="{cy + 3.5}" font-size="10.5" fill="#333">{escape(item.text)}</text>')
                x += w
            y += 18
        return out


def _point_label(f: _Frame, px: float, py: float, size: float, lab: str) -> str:
    """A mark's label: beside the mark, below it near the top edge, and to its left near the right edge."""
    ly = py - size - 1 if py - size - 1 > f.top + 11 else py + size + 11
    right_edge = px + size + 3 + 5.6 * len(lab) > f.left + f.pw
    lx, anchor = (px - size - 3, "end") if right_edge else (px + size + 3, "start")
    return f'<text class="point-label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" font-size="10" fill="#333">{escape(lab)}</text>'
