"""Small inline SVG charts drawn on the server: no script and nothing fetched from anywhere.

Each point of a line chart is a ``<circle class="pt">`` and each bar a ``<rect class="bar">``, with
a ``<title>`` giving its label and value (the browser shows it on hover), so what a chart shows
can be checked in the page itself. Every text is escaped.
"""

from __future__ import annotations

import html
from typing import Sequence

W, H = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 34
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _frame(chart_id: str, y_lo: float, y_hi: float, labels: Sequence[str], body: str, legend: Sequence[tuple[str, str]]) -> str:
    ticks = []
    for i in range(5):
        v = y_lo + (y_hi - y_lo) * i / 4
        y = TOP + (H - TOP - BOTTOM) * (1 - i / 4)
        ticks.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_esc(_fmt(v))}</text>')
    xl = ""
    if labels:
        xl = (f'<text x="{LEFT}" y="{H - 18}" font-size="10">{_esc(labels[0])}</text>'
              f'<text x="{W - RIGHT}" y="{H - 18}" font-size="10" text-anchor="end">{_esc(labels[-1])}</text>')
    keys = "".join(
        f'<rect x="{LEFT + i * 130}" y="{H - 11}" width="9" height="9" fill="{c}"/>'
        f'<text x="{LEFT + 12 + i * 130}" y="{H - 3}" font-size="10">{_esc(name[:22])}</text>'
        for i, (name, c) in enumerate(legend[:4])
    )
    return (f'<svg class="chart" data-chart="{_esc(chart_id)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(ticks)}{xl}{body}{keys}</svg>')


def _scale(values: Sequence[float], floor_lines: Sequence[float]) -> tuple[float, float]:
    every = [v for v in values if v is not None] + list(floor_lines)
    lo, hi = (min(every), max(every)) if every else (0.0, 1.0)
    if lo >= 0 and lo < hi * 0.5:
        lo = 0.0
    if hi == lo:
        hi, lo = hi + (abs(hi) or 1) * 0.1, lo - (abs(lo) or 1) * 0.1
    return lo, hi


def line_chart(chart_id: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
               lines: Sequence[tuple[str, float]] = ()) -> str:
    """Series over the same x positions (``labels``); ``lines``: named horizontal thresholds."""
    lo, hi = _scale([v for _, vals in series for v in vals], [y for _, y in lines])
    n = max(1, len(labels) - 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = LEFT + (W - LEFT - RIGHT) * (i / n if len(labels) > 1 else 0.5)
        y = TOP + (H - TOP - BOTTOM) * (1 - (v - lo) / (hi - lo))
        return x, y

    body = []
    for name, y_val in lines:
        _, y = xy(0, y_val)
        body.append(f'<line class="threshold" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888" '
                    f'stroke-dasharray="5 4"><title>{_esc(name)}: {_esc(_fmt(y_val))}</title></line>'
                    f'<text x="{W - RIGHT}" y="{y - 3:.1f}" font-size="10" text-anchor="end" fill="#666">{_esc(name)}</text>')
    for k, (name, values) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = [(i, v) for i, v in enumerate(values) if v is not None]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        for i, v in pts:
            x, y = xy(i, v)
            body.append(f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                        f'<title>{_esc(name)} · {_esc(labels[i])}: {_esc(_fmt(v))}</title></circle>')
    return _frame(chart_id, lo, hi, labels, "".join(body), [(n, PALETTE[k % len(PALETTE)]) for k, (n, _) in enumerate(series)])


def bar_chart(chart_id: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], stacked: bool = True) -> str:
    """Bars per x position: stacked (parts of a whole) or side by side."""
    totals = [sum(vals[i] for _, vals in series) for i in range(len(labels))] if stacked else \
        [v for _, vals in series for v in vals]
    hi = max(totals + [1])
    slot = (W - LEFT - RIGHT) / max(1, len(labels))
    width = max(2.0, slot * 0.7 / (1 if stacked else max(1, len(series))))
    body = []
    for i, label in enumerate(labels):
        base = 0.0
        for k, (name, vals) in enumerate(series):
            v = vals[i]
            h = (H - TOP - BOTTOM) * v / hi
            x = LEFT + i * slot + slot * 0.15 + (0 if stacked else k * width)
            y = H - BOTTOM - h - (base if stacked else 0)
            if v > 0:
                body.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
                            f'fill="{PALETTE[k % len(PALETTE)]}"><title>{_esc(name)} · {_esc(label)}: {_esc(_fmt(v))}</title></rect>')
            if stacked:
                base += h
    return _frame(chart_id, 0.0, hi, labels, "".join(body), [(n, PALETTE[k % len(PALETTE)]) for k, (n, _) in enumerate(series)])


def hbar_chart(chart_id: str, rows: Sequence[tuple[str, float]]) -> str:
    """One horizontal bar per row (label, value), longest first as given."""
    rows = list(rows)[:12]
    height = TOP + 22 * len(rows) + 8
    hi = max([v for _, v in rows] + [1])
    body = []
    for i, (label, v) in enumerate(rows):
        y = TOP + 22 * i
        w = (W - 250) * v / hi
        body.append(f'<text x="4" y="{y + 14}" font-size="11">{_esc(label[:40])}</text>'
                    f'<rect class="bar" x="240" y="{y + 3}" width="{max(w, 1):.1f}" height="15" fill="{PALETTE[1]}">'
                    f'<title>{_esc(label)}: {_esc(_fmt(v))}</title></rect>'
                    f'<text x="{244 + w:.1f}" y="{y + 14}" font-size="11">{_esc(_fmt(v))}</text>')
    return (f'<svg class="chart" data-chart="{_esc(chart_id)}" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
            f'role="img" xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')
