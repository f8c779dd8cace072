"""Line plots for the widgets, drawn with pyqtgraph: loss curves and the learning-rate sweep.

The mouse wheel zooms, dragging pans (a right-drag zooms each axis), the "A" button at the
bottom left (shown while the view is zoomed or panned) resets the view, and hovering shows the
values of the nearest point. Clicking a legend entry hides or shows its curve.

Redraws are throttled: data may arrive hundreds of times a second, the plot redraws at most
`MAX_FPS` times a second.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
from qtpy.QtCore import QPointF, Qt, QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

MAX_FPS = 10
HOVER_PX = 40  # the nearest point is shown when it is at most this far from the mouse (pixels)


@dataclass
class Series:
    """One curve: its name (legend), colour, axis and data."""

    name: str
    color: str
    axis: str = "left"
    points: bool = False
    xs: list = field(default_factory=list)
    ys: list = field(default_factory=list)


class _Legend(pg.LegendItem):
    """pyqtgraph's legend, kept in its row above the plot: not dragged over the curves."""

    def mouseDragEvent(self, ev):
        ev.ignore()


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
        self.curves: dict[str, pg.PlotDataItem] = {}  # by series name
        self._drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # what the curves show
        self._marker_line: pg.InfiniteLine | None = None
        self._build_view()
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._timer = QTimer(self, singleShot=True)
        self._timer.timeout.connect(self._redraw)
        self._last_redraw = -math.inf
        self.set_colors(**self.colors)

    def _build_view(self) -> None:
        self.view = pg.GraphicsLayoutWidget()
        self.view.ci.setContentsMargins(2, 2, 6, 2)
        self.legend = _Legend(colCount=4, frame=False, horSpacing=4)
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.view.addItem(self.legend, row=0, col=0)
        self.view.ci.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignRight)
        item = self.plot_item = self.view.addPlot(row=1, col=0)
        item.setMenuEnabled(True)
        item.showGrid(x=True, y=True, alpha=0.3)
        item.setLabel("bottom", self.xlabel)
        item.setLabel("left", self.ylabel)
        item.setLogMode(x=self.log_x, y=False)
        for side in ("left", "bottom", "right"):
            item.getAxis(side).enableAutoSIPrefix(False)  # 0.5, not 500 (x0.001)
        item.autoBtn.clicked.disconnect()
        item.autoBtn.clicked.connect(lambda *_: self.reset_view())
        self.right_box = None
        if self.right_label:
            self._add_right_axis()
        self._tip = pg.TextItem(anchor=(0, 1))
        self._dot = pg.ScatterPlotItem(size=9)
        for hover_item in (self._dot, self._tip):
            hover_item.setZValue(10)
            hover_item.hide()
            item.vb.addItem(hover_item, ignoreBounds=True)
        self.view.scene().sigMouseMoved.connect(self._on_mouse_moved)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)

    def _add_right_axis(self) -> None:
        """Add a view box for the right axis: x follows the plot, y fits its own data.

        It lies under the plot's view box, in the same place, and the plot's box takes the
        mouse: zoom and pan move x for both, and the right axis keeps fitting the curves in view.
        """
        item, box = self.plot_item, pg.ViewBox(enableMenu=False)
        item.showAxis("right")
        item.setLabel("right", self.right_label)
        item.getAxis("right").linkToView(box)
        box.setParentItem(item)
        box.setZValue(-100)
        box.setMouseEnabled(x=False, y=False)
        box.setAutoVisible(y=True)
        item.vb.geometryChanged.connect(lambda: box.setGeometry(item.vb.geometry()))
        box.setXLink(item.vb)
        self.right_box = box

    # --- data ------------------------------------------------------------------------------

    def add_series(self, name: str, color: str, *, axis="left", points=False) -> None:
        """Add an empty curve; ``points`` also draws a dot per value (for sparse data)."""
        self.series[name] = Series(name, color, axis, points)
        symbol = {"symbol": "o", "symbolSize": 5, "symbolBrush": color, "symbolPen": None}
        curve = pg.PlotDataItem(pen=pg.mkPen(color, width=1.6), antialias=True,
                                autoDownsample=True, clipToView=True,
                                **(symbol if points else {}))
        if axis == "right":
            curve.setLogMode(self.log_x, False)
            self.right_box.addItem(curve)
        else:
            self.plot_item.addItem(curve)
        self.curves[name] = curve
        self.legend.addItem(curve, name)

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
        if self._marker_line is not None:
            self.plot_item.removeItem(self._marker_line)
            self._marker_line = None
        if self.marker is not None:
            color = self.colors["text"]
            self._marker_line = pg.InfiniteLine(
                self._view_x(self.marker[0]), angle=90,
                pen=pg.mkPen(color, style=Qt.PenStyle.DashLine), label=text,
                labelOpts={"position": 0.08, "color": color})
            self.plot_item.addItem(self._marker_line, ignoreBounds=True)

    def set_ylim(self, lo: float | None = None, hi: float | None = None) -> None:
        """Fix the left axis' range (None: fit the data), e.g. to ignore a diverging tail.

        The view keeps the range until the user zooms or pans; "A" returns to it.
        """
        self.ylim = None if lo is None or hi is None or not hi > lo else (float(lo), float(hi))
        if self.plot_item.vb.autoRangeEnabled()[0]:  # not zoomed or panned by the user
            self._apply_ylim()

    def clear(self) -> None:
        """Remove every point, the marker and a fixed range (the curves stay, empty)."""
        for series in self.series.values():
            series.xs, series.ys = [], []
        self.ylim = None
        self.set_marker(None)
        self.reset_view()
        self.schedule_redraw()

    def reset_view(self) -> None:
        """Fit the view to the data again (or to the fixed range, see `set_ylim`)."""
        self.plot_item.enableAutoRange()
        if self.right_box is not None:
            self.right_box.enableAutoRange()
        self._apply_ylim()

    def _apply_ylim(self) -> None:
        if self.ylim is None:
            self.plot_item.enableAutoRange(axis="y")
        else:
            self.plot_item.setYRange(*self.ylim, padding=0)

    # --- looks -----------------------------------------------------------------------------

    def set_colors(self, *, background: str, axes: str, text: str) -> None:
        """Follow a theme: colours as ``#rrggbb``."""
        self.colors = {"background": background, "axes": axes, "text": text}
        self.view.setBackground(background)
        for side in ("left", "bottom", "right"):
            axis = self.plot_item.getAxis(side)
            axis.setPen(axes)
            axis.setTextPen(text)
        self.legend.setLabelTextColor(text)
        fill = pg.mkColor(background)
        fill.setAlpha(220)
        self._tip.fill = pg.mkBrush(fill)
        self._tip.border = pg.mkPen(axes)
        self._tip.setColor(text)
        if self.marker is not None:
            self.set_marker(*self.marker)

    # --- redraws ---------------------------------------------------------------------------

    def schedule_redraw(self) -> None:
        """Redraw soon, at most `MAX_FPS` times a second.

        When the last redraw is old enough the plot redraws with the current event's other
        updates (a progress bar, a label): the window then repaints once, not twice. That
        matters where each window repaint is slow (napari's canvas makes Qt compose the
        whole window with OpenGL; tens of milliseconds with software rendering).
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
        for name, series in self.series.items():
            xs, ys = np.array(series.xs, dtype=float), np.array(series.ys, dtype=float)
            self._drawn[name] = xs, ys
            self.curves[name].setData(xs, ys)

    # --- values on hover -------------------------------------------------------------------

    def nearest(self, scene_pos: QPointF) -> tuple[str, float, float] | None:
        """Return the drawn point nearest to ``scene_pos`` (within `HOVER_PX`): name, x, y."""
        best, best_distance = None, HOVER_PX
        for name, (xs, ys) in self._drawn.items():
            if not xs.size or not self.curves[name].isVisible():
                continue
            box = self.right_box if self.series[name].axis == "right" else self.plot_item.vb
            px, py = _to_scene(box, self._view_x(xs), ys)
            inside = box.sceneBoundingRect()
            distance = np.hypot(px - scene_pos.x(), py - scene_pos.y())
            distance[(py < inside.top() - 1) | (py > inside.bottom() + 1)] = np.inf
            i = int(np.argmin(distance))
            if distance[i] <= best_distance:
                best, best_distance = (name, float(xs[i]), float(ys[i])), distance[i]
        return best

    def hover_text(self, name: str, x: float, y: float) -> str:
        """Return the text shown beside a point: ``"val loss: 0.412"``, ``"step 120"``."""
        return f"{name}: {y:.4g}\n{self.xlabel} {_number(x)}".strip()

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        box = self.plot_item.vb
        hit = self.nearest(scene_pos) if box.sceneBoundingRect().contains(scene_pos) else None
        if hit is None:
            self._tip.hide()
            self._dot.hide()
            return
        name, x, y = hit
        series_box = self.right_box if self.series[name].axis == "right" else box
        px, py = _to_scene(series_box, np.array([self._view_x(x)]), np.array([y]))
        point = box.mapSceneToView(QPointF(float(px[0]), float(py[0])))
        self._dot.setData([point.x()], [point.y()], brush=self.series[name].color,
                          pen=pg.mkPen(self.colors["text"]))
        self._tip.setText(self.hover_text(name, x, y))
        view = box.sceneBoundingRect()
        self._tip.setAnchor((1.0 if px[0] > view.center().x() else 0.0,
                             0.0 if py[0] < view.center().y() else 1.0))  # toward the middle
        self._tip.setPos(point)
        self._dot.show()
        self._tip.show()

    def _view_x(self, x):
        """Return x where the view box has it: its log10 on a log axis."""
        return np.log10(x) if self.log_x else x


def _to_scene(box: pg.ViewBox, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map view-box coordinates to scene pixels, for many points at once."""
    rect, view = box.sceneBoundingRect(), box.viewRect()
    width, height = view.width() or 1.0, view.height() or 1.0
    px = rect.left() + (xs - view.left()) / width * rect.width()
    py = rect.bottom() - (ys - view.top()) / height * rect.height()
    return px, py


def _number(value: float) -> str:
    """Format briefly: ``1200`` for a step, ``0.00312`` for a learning rate."""
    return f"{value:.6g}" if float(value).is_integer() else f"{value:.3g}"
