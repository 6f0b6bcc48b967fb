"""Server-rendered time charts as inline SVG: no chart library, no JavaScript, nothing to download.

``time_chart`` draws stacked bars (counts per time bucket, one colour per series) and optional
lines on a 0..1 right-hand axis (a risk score), with UTC time ticks, a count axis and a legend.
Every text is escaped; each bar has a ``<title>`` (the browser's tooltip) with its exact value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#3b6fb6", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057", "#b56576")
ACTION_COLOURS = {
    "block": "#b00020",
    "throttle": "#edae49",
    "reverify": "#8d6a9f",
    "allow": "#66a182",
    "reset": "#2e4057",
    "watermark": "#3b6fb6",
    "cap_params": "#00798c",
    "strip_reasoning": "#b56576",
}


@dataclass(frozen=True)
class Bars:
    label: str
    counts: Mapping[float, int]  # bucket start -> count
    colour: str


@dataclass(frozen=True)
class Line:
    label: str
    points: Sequence[tuple[float, float]]  # (ts, value in [0, 1])
    colour: str


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def _fmt_count(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def _tick_label(ts: float, span_s: float) -> str:
    fmt = "%H:%M" if span_s <= 2 * 86400 else "%m-%d"
    return time.strftime(fmt, time.gmtime(ts))


def time_chart(
    start: float,
    end: float,
    bucket_s: float,
    bars: Sequence[Bars] = (),
    lines: Sequence[Line] = (),
    *,
    title: str = "",
    width: int = 860,
    height: int = 220,
    y_label: str = "per bucket",
) -> Markup:
    """An SVG chart of [start, end): stacked bars per bucket plus lines on a 0..1 axis."""
    left, right, top, bottom = 52, 44 if lines else 12, 26, 34
    pw, ph = width - left - right, height - top - bottom
    first = math.floor(start / bucket_s) * bucket_s
    n = max(1, math.ceil((end - first) / bucket_s))
    totals = [0] * n
    for b in bars:
        for t, c in b.counts.items():
            i = int((t - first) // bucket_s)
            if 0 <= i < n:
                totals[i] += c
    ymax = _nice_max(max(totals, default=0))
    bw = pw / n

    def x_of(ts: float) -> float:
        return left + (ts - first) / (n * bucket_s) * pw

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{left}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    # grid and count axis
    for k in range(5):
        v = ymax * k / 4
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_fmt_count(v)}</text>'
        )
    out.append(
        f'<text x="12" y="{top + ph / 2:.0f}" class="tick" transform="rotate(-90 12 {top + ph / 2:.0f})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    # stacked bars
    base = [0] * n
    for b in bars:
        for t, c in sorted(b.counts.items()):
            i = int((t - first) // bucket_s)
            if not 0 <= i < n or c <= 0:
                continue
            h = ph * c / ymax
            y = top + ph - ph * base[i] / ymax - h
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(first + i * bucket_s))
            out.append(
                f'<rect x="{left + i * bw + 0.5:.1f}" y="{y:.1f}" width="{max(1.0, bw - 1):.1f}" '
                f'height="{h:.1f}" fill="{b.colour}"><title>{escape(b.label)} {when} UTC: {c}</title></rect>'
            )
            base[i] += c
    # lines on the 0..1 axis
    if lines:
        for k in range(5):
            y = top + ph - ph * k / 4
            out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" class="tick">{k / 4:g}</text>')
    for ln in lines:
        pts = [(x_of(t), top + ph - ph * max(0.0, min(1.0, v))) for t, v in ln.points if first <= t <= end]
        if not pts:
            continue
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{ln.colour}" stroke-width="2"/>')
        for (x, y), (t, v) in zip(pts, [p for p in ln.points if first <= p[0] <= end], strict=True):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{ln.colour}">'
                f"<title>{escape(ln.label)} {when} UTC: {v:.4f}</title></circle>"
            )
    # time axis
    span = n * bucket_s
    for k in range(7):
        ts = first + round(n * k / 6) * bucket_s  # ticks on bucket boundaries
        x = x_of(ts)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="axis"/>')
        anchor = "start" if k == 0 else "end" if k == 6 else "middle"
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="{anchor}" class="tick">'
            f"{_tick_label(ts, span)}</text>"
        )
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" class="axis"/>')
    # legend, right-aligned above the plot
    items: list[Bars | Line] = [*bars, *lines]
    x = left + pw - sum(24 + 7 * len(item.label) for item in items)
    for item in items:
        out.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{item.colour}"/>')
        out.append(f'<text x="{x + 14}" y="17" class="tick">{escape(item.label)}</text>')
        x += 24 + 7 * len(item.label)
    out.append("</svg>")
    return Markup("".join(out))
