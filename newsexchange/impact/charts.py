"""Small server-rendered SVG charts for the impact pages (pure: values in, markup out).

Why SVG written by hand instead of a charting library: the page must work without
JavaScript, print on one page and be read by a screen reader; a few dozen rectangles do all
of that, and nothing on the server needs a plotting stack.

The chart is accessible and readable without CSS: ``role="img"``, a ``<title>`` and an
``aria-label`` that carry every number (a screen reader hears the data, not "image"), the
colours are attributes (not a stylesheet), and a ``viewBox`` with ``width="100%"`` scales
it to a 390 px phone as well as to a printed page. Every text (labels, series names) is
escaped here.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup

__all__ = ["COLOURS", "bar_chart"]

#: One colour per series; dark enough on white and on paper (print), told apart also by the
#: legend's order, so the chart does not rely on colour alone.
COLOURS: tuple[str, ...] = ("#1f5fa8", "#c2571a", "#2e7d32", "#6a1b9a")

# The drawing's own units are about CSS pixels at a phone's width (390 px less the page's
# margins), so its 12-unit text reads as 12 px there and grows on a wider screen or paper.
_WIDTH = 360
_HEIGHT = 200
_LEFT = 28  # room for the scale's numbers
_LEGEND_ROW = 18
_BOTTOM = 24  # room for the period labels
_CHAR = 7.6  # a generous average glyph width at font-size 12 (Cyrillic is wide)


def _nice_max(value: int) -> int:
    """The top of the scale: the smallest of 1, 2, 5 × 10ⁿ at or above ``value``."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def bar_chart(
    series: Sequence[tuple[str, Sequence[int]]],
    labels: Sequence[str],
    *,
    title: str,
) -> Markup:
    """Grouped bars: one group per label (a period), one bar per series in each group.

    ``series`` is ``[(name, values), …]``, each ``values`` as long as ``labels``. Returns
    an ``<svg>`` element, every text escaped; each bar is a ``<rect>`` with
    ``data-series``, ``data-label`` and ``data-value`` (what the tests and a reader's tools
    can read back) and its own ``<title>`` (a tooltip, also without JavaScript).
    """
    for name, values in series:
        if len(values) != len(labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(labels)} labels")
    # At least 2, so that the middle of the scale is a whole number.
    top = max(_nice_max(max((v for _, vs in series for v in vs), default=0)), 2)
    # The legend first: as many rows as the series' names need at this width.
    legend: list[tuple[float, float]] = []
    x, row = float(_LEFT), 0
    for name, _values in series:
        width = 16 + _CHAR * len(name) + 10
        if x + width > _WIDTH and x > _LEFT:
            x, row = float(_LEFT), row + 1
        legend.append((x, 4 + row * _LEGEND_ROW))
        x += width
    top_margin = 10 + (row + 1) * _LEGEND_ROW
    plot_w = _WIDTH - _LEFT - 4
    plot_h = _HEIGHT - top_margin - _BOTTOM
    groups = max(len(labels), 1)
    group_w = plot_w / groups
    bar_w = group_w * 0.8 / max(len(series), 1)
    summary = "; ".join(
        f"{label}: " + ", ".join(f"{name} {values[i]}" for name, values in series)
        for i, label in enumerate(labels)
    )
    aria = f"{title}. {summary}" if summary else title
    parts: list[Markup] = [
        Markup(
            '<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {w} {h}" '
            'width="100%" preserveAspectRatio="xMidYMid meet" aria-label="{aria}" '
            'font-family="sans-serif" font-size="12">'
        ).format(w=_WIDTH, h=_HEIGHT, aria=aria),
        Markup("<title>{}</title>").format(aria),
        Markup('<rect x="0" y="0" width="{}" height="{}" fill="#ffffff"/>').format(_WIDTH, _HEIGHT),
    ]
    # The scale: the baseline, the top, and the middle.
    for frac in (0.0, 0.5, 1.0):
        y = top_margin + plot_h * (1 - frac)
        value = round(top * frac)
        parts.append(
            Markup(
                '<line x1="{x1}" y1="{y:.1f}" x2="{x2}" y2="{y:.1f}" stroke="#999999" '
                'stroke-width="{sw}"/><text x="{tx}" y="{ty:.1f}" text-anchor="end" '
                'fill="#333333">{v}</text>'
            ).format(
                x1=_LEFT,
                x2=_WIDTH - 4,
                y=y,
                sw="1" if frac == 0 else "0.5",
                tx=_LEFT - 4,
                ty=y + 4,
                v=value,
            )
        )
    # The legend, in the series' order.
    for k, ((name, _values), (lx, ly)) in enumerate(zip(series, legend, strict=True)):
        colour = COLOURS[k % len(COLOURS)]
        parts.append(
            Markup(
                '<rect x="{x:.1f}" y="{y}" width="12" height="12" fill="{c}"/>'
                '<text x="{tx:.1f}" y="{ty}" fill="#222222">{n}</text>'
            ).format(x=lx, y=ly, c=colour, tx=lx + 16, ty=ly + 11, n=name)
        )
    # The bars.
    step = max(1, -(-groups // 6))  # at most 6 period labels, so they stay readable
    for i, label in enumerate(labels):
        gx = _LEFT + group_w * i + group_w * 0.1
        for k, (name, values) in enumerate(series):
            v = values[i]
            h = plot_h * v / top
            parts.append(
                Markup(
                    '<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{c}" '
                    'data-series="{s}" data-label="{lab}" data-value="{v}">'
                    "<title>{lab}: {s} {v}</title></rect>"
                ).format(
                    x=gx + bar_w * k,
                    y=top_margin + plot_h - h,
                    w=bar_w,
                    h=h,
                    c=COLOURS[k % len(COLOURS)],
                    s=name,
                    lab=label,
                    v=v,
                )
            )
        if i % step == 0:
            parts.append(
                Markup(
                    '<text x="{x:.1f}" y="{y}" text-anchor="middle" fill="#333333">{t}</text>'
                ).format(x=_LEFT + group_w * (i + 0.5), y=_HEIGHT - _BOTTOM + 16, t=label)
            )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
