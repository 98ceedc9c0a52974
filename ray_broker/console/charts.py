"""Line charts as inline SVG, drawn on the server: no chart library, no script, nothing to
escape (only numbers reach the markup)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Line:
    points: str  # the SVG polyline's "x,y x,y ..."
    css_class: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    top: float  # the value at the top edge


def chart(series: dict[str, list[float]], width: int = 480, height: int = 120) -> Chart:
    """One polyline per series (``css_class`` → values, oldest first), sharing one y scale
    that starts at 0; the newest value sits at the right edge."""
    top = max((max(values) for values in series.values() if values), default=0.0) or 1.0
    lines = []
    for css_class, values in series.items():
        if len(values) < 2:
            continue
        step = width / (len(values) - 1)
        points = " ".join(
            f"{i * step:.1f},{height - v / top * (height - 4) - 2:.1f}"
            for i, v in enumerate(values)
        )
        lines.append(Line(points, css_class))
    return Chart(width, height, lines, top)


def rate_text(value: float) -> str:
    """``1234.5`` → ``"1.2k"``: a rate in a table cell."""
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}" if value >= 10 or value == 0 else f"{value:.1f}"
