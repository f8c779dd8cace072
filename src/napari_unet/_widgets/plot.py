"""A small line plot drawn with QPainter: curves, a log-x option, ticks, a legend, a marker.

Enough for loss curves and the learning-rate sweep without a plotting dependency.
Redraws are throttled: data may arrive hundreds of times a second, the plot repaints
at most `MAX_FPS` times a second.
"""

import math
import time
from dataclasses import dataclass, field

from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

MAX_FPS = 10
MARGINS = (52, 24, 44, 34)  # left, top, right, bottom (px)
RIGHT_TITLE = 16  # more room on the right for a right axis title beside its tick labels


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Return round tick values (steps of 1, 2 or 5 times a power of ten) within [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Return the powers of ten within [lo, hi] (both positive)."""
    return [10.0**e for e in range(math.ceil(math.log10(lo) - 1e-9),
                                   math.floor(math.log10(hi) + 1e-9) + 1)]


def tick_label(value: float, *, log: bool = False) -> str:
    """Format a tick value briefly: ``0.5``, ``1200``, ``1e-4``."""
    if log:
        return f"1e{round(math.log10(value))}"
    return f"{value:.3g}"


@dataclass
class Series:
    """One curve: its name (legend), colour, axis and data."""

    name: str
    color: str
    axis: str = "left"
    points: bool = False
    xs: list = field(default_factory=list)
    ys: list = field(default_factory=list)


class PlotWidget(QWidget):
    """A line plot with a left and an optional right y axis.

    Parameters
    ----------
    xlabel, ylabel : str
        Axis titles; ``ylabel`` is the left axis.
    right_label : str, optional
        Title of the right axis, for series added with ``axis='right'``.
    log_x : bool
        Logarithmic x axis (values must be positive).
    parent : QWidget, optional
    """

    def __init__(self, *, xlabel="", ylabel="", right_label="", log_x=False, parent=None):
        super().__init__(parent)
        self.xlabel, self.ylabel, self.right_label, self.log_x = xlabel, ylabel, right_label, log_x
        self.series: dict[str, Series] = {}
        self.marker: tuple[float, str] | None = None
        self.ylim: tuple[float, float] | None = None
        self.colors = {"background": "#23242b", "axes": "#565f6c", "text": "#f0f1f2"}
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._timer = QTimer(self, singleShot=True)
        self._timer.timeout.connect(self._redraw)
        self._last_redraw = -math.inf

    def add_series(self, name: str, color: str, *, axis="left", points=False) -> None:
        """Add an empty curve; ``points`` also draws a dot per value (for sparse data)."""
        self.series[name] = Series(name, color, axis, points)

    def append(self, name: str, x: float, y: float | None) -> None:
        """Add one point to a curve (None and non-finite values are skipped)."""
        if y is not None and math.isfinite(y) and (x > 0 or not self.log_x):
            self.series[name].xs.append(float(x))
            self.series[name].ys.append(float(y))
            self.schedule_redraw()

    def set_data(self, name: str, xs, ys) -> None:
        """Replace a curve's points."""
        self.series[name].xs, self.series[name].ys = [], []
        for x, y in zip(xs, ys, strict=True):
            self.append(name, x, y)
        self.schedule_redraw()

    def set_marker(self, x: float | None, text: str = "") -> None:
        """Draw a labelled vertical line at ``x`` (None removes it)."""
        self.marker = None if x is None else (float(x), text)
        self.schedule_redraw()

    def set_ylim(self, lo: float | None = None, hi: float | None = None) -> None:
        """Fix the left axis' range (None: fit the data), e.g. to ignore a diverging tail."""
        self.ylim = None if lo is None or hi is None or not hi > lo else (float(lo), float(hi))
        self.schedule_redraw()

    def clear(self) -> None:
        """Remove every point, the marker and a fixed range (the curves stay, empty)."""
        for series in self.series.values():
            series.xs, series.ys = [], []
        self.ylim = None
        self.set_marker(None)

    def set_colors(self, *, background: str, axes: str, text: str) -> None:
        """Follow a theme: colours as ``#rrggbb``."""
        self.colors = {"background": background, "axes": axes, "text": text}
        self.schedule_redraw()

    def schedule_redraw(self) -> None:
        """Repaint soon, at most `MAX_FPS` times a second.

        When the last repaint is old enough the plot repaints with the current event's
        other updates (a progress bar, a label): the window then repaints once, not twice.
        That matters where each window repaint is slow (napari's canvas makes Qt compose
        the whole window with OpenGL; tens of milliseconds with software rendering).
        """
        if self._timer.isActive():
            return
        wait = self._last_redraw + 1 / MAX_FPS - time.monotonic()
        if wait > 0:
            self._timer.start(math.ceil(1000 * wait))
        else:
            self._redraw()

    def _redraw(self) -> None:
        self._last_redraw = time.monotonic()
        self.update()

    # --- drawing -----------------------------------------------------------------------

    def _x(self, value: float) -> float:
        return math.log10(value) if self.log_x else value

    def _ranges(self) -> dict[str, tuple[float, float] | None]:
        ranges = {"x": None, "left": None, "right": None}
        for s in self.series.values():
            if s.xs:
                ranges["x"] = _union(ranges["x"], (min(s.xs), max(s.xs)))
                ranges[s.axis] = _union(ranges[s.axis], (min(s.ys), max(s.ys)))
        if self.marker and ranges["x"]:
            ranges["x"] = _union(ranges["x"], (self.marker[0], self.marker[0]))
        ranges = {k: None if r is None else _padded(r, log=k == "x" and self.log_x)
                  for k, r in ranges.items()}
        if self.ylim and ranges["left"]:
            ranges["left"] = self.ylim
        return ranges

    def paintEvent(self, event):
        """Draw the axes, curves, marker and legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(self.colors["background"]))
        left, top, right, bottom = MARGINS
        right += RIGHT_TITLE if self.right_label else 0
        area = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        ranges = self._ranges()
        self._draw_frame(painter, area, ranges)
        if ranges["x"] is not None:
            for s in self.series.values():
                if s.xs and ranges[s.axis] is not None:
                    self._draw_series(painter, area, s, ranges["x"], ranges[s.axis])
            self._draw_marker(painter, area, ranges["x"])
        self._draw_legend(painter, area)
        painter.end()

    def _map(self, area, x, y, xr, yr) -> QPointF:
        x0, x1 = (self._x(v) for v in xr)
        px = area.left() + (self._x(x) - x0) / (x1 - x0) * area.width()
        py = area.bottom() - (y - yr[0]) / (yr[1] - yr[0]) * area.height()
        return QPointF(px, py)

    def _draw_frame(self, painter, area, ranges) -> None:
        text, axes = QColor(self.colors["text"]), QColor(self.colors["axes"])
        painter.setPen(QPen(axes, 1))
        painter.drawRect(area)
        xr = ranges["x"]
        if xr is not None:
            ticks = log_ticks(*xr) if self.log_x else nice_ticks(*xr)
            for t in ticks:
                p = self._map(area, t, 0, xr, (0, 1))
                painter.setPen(QPen(axes, 1))
                painter.drawLine(QPointF(p.x(), area.bottom()), QPointF(p.x(), area.bottom() + 4))
                painter.setPen(text)
                painter.drawText(QRectF(p.x() - 30, area.bottom() + 4, 60, 14),
                                 Qt.AlignmentFlag.AlignHCenter, tick_label(t, log=self.log_x))
        for side in ("left", "right"):
            if ranges[side] is not None:
                self._draw_y_ticks(painter, area, ranges[side], side)
        painter.setPen(text)
        painter.drawText(QRectF(area.left(), self.height() - 15, area.width(), 14),
                         Qt.AlignmentFlag.AlignHCenter, self.xlabel)
        self._draw_y_title(painter, self.ylabel, 14)
        if self.right_label:
            self._draw_y_title(painter, self.right_label, self.width() - 2)

    def _draw_y_ticks(self, painter, area, yr, side) -> None:
        x = area.left() if side == "left" else area.right()
        for t in nice_ticks(*yr, count=4):
            y = area.bottom() - (t - yr[0]) / (yr[1] - yr[0]) * area.height()
            painter.setPen(QPen(QColor(self.colors["axes"]), 1))
            painter.drawLine(QPointF(x - 4 if side == "left" else x, y),
                             QPointF(x if side == "left" else x + 4, y))
            painter.setPen(QColor(self.colors["text"]))
            box = QRectF(x - 44, y - 7, 38, 14) if side == "left" else QRectF(x + 6, y - 7, 38, 14)
            align = Qt.AlignmentFlag.AlignRight if side == "left" else Qt.AlignmentFlag.AlignLeft
            painter.drawText(box, align | Qt.AlignmentFlag.AlignVCenter, tick_label(t))

    def _draw_y_title(self, painter, title, x) -> None:
        left = x < self.width() / 2
        painter.save()
        painter.translate(x, self.height() / 2)
        painter.rotate(-90 if left else 90)  # text reads towards the plot on both sides
        painter.drawText(QRectF(-80, -12 if left else 0, 160, 14),
                         Qt.AlignmentFlag.AlignHCenter, title)
        painter.restore()

    def _draw_series(self, painter, area, s, xr, yr) -> None:
        points = [self._map(area, x, y, xr, yr) for x, y in zip(s.xs, s.ys, strict=True)]
        painter.save()
        painter.setClipRect(area)
        painter.setPen(QPen(QColor(s.color), 1.6))
        path = QPainterPath(points[0])
        for p in points[1:]:
            path.lineTo(p)
        painter.drawPath(path)
        if s.points:
            painter.setBrush(QColor(s.color))
            for p in points:
                painter.drawEllipse(p, 2.5, 2.5)
        painter.restore()

    def _draw_marker(self, painter, area, xr) -> None:
        if self.marker is None:
            return
        x = self._map(area, self.marker[0], 0, xr, (0, 1)).x()
        painter.setPen(QPen(QColor(self.colors["text"]), 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
        if x < area.center().x():  # label on the side with room
            box, align = QRectF(x + 4, area.bottom() - 18, 120, 14), Qt.AlignmentFlag.AlignLeft
        else:
            box, align = QRectF(x - 124, area.bottom() - 18, 120, 14), Qt.AlignmentFlag.AlignRight
        painter.drawText(box, align, self.marker[1])

    def _draw_legend(self, painter, area) -> None:
        x, y = area.right(), area.top() - 20  # above the frame, clear of the curves
        for s in reversed(list(self.series.values())):
            width = painter.fontMetrics().horizontalAdvance(s.name)
            painter.setPen(QPen(QColor(s.color), 2))
            painter.drawLine(QPointF(x - width - 22, y + 7), QPointF(x - width - 6, y + 7))
            painter.setPen(QColor(self.colors["text"]))
            painter.drawText(QRectF(x - width, y, width, 14), Qt.AlignmentFlag.AlignLeft, s.name)
            x -= width + 34


def _union(a, b):
    return b if a is None else (min(a[0], b[0]), max(a[1], b[1]))


def _padded(r: tuple[float, float], *, log: bool) -> tuple[float, float]:
    """Widen a range a little (and a point to an interval) so curves do not touch the frame."""
    lo, hi = r
    if log:
        return (lo / 1.5, hi * 1.5) if hi > lo else (lo / 10, hi * 10)
    span = hi - lo or abs(hi) or 1.0
    return lo - 0.05 * span, hi + 0.05 * span
