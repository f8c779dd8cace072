"""The pyqtgraph line plot: curves, throttled redraws, log-x, marker, values on hover, zoom."""

import math

import pytest
from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
from qtpy.QtGui import QMouseEvent, QWheelEvent
from qtpy.QtWidgets import QApplication

from napari_unet._widgets.plot import MAX_FPS, PlotWidget


@pytest.fixture
def show(qtbot):
    """Show a plot at a fixed size and let its view boxes take their geometry."""

    def shown(plot):
        qtbot.addWidget(plot)
        plot.resize(600, 360)
        plot.show()
        qtbot.waitExposed(plot)
        qtbot.wait(2 * 1000 // MAX_FPS)  # a pending redraw, then the auto-range
        return plot

    return shown


def viewport_pos(plot, x, y, *, box=None):
    """Where the point (x, y) of the data lies in the plot's viewport (pixels)."""
    box = box or plot.plot_item.vb
    view_x = math.log10(x) if plot.log_x else x
    return plot.view.mapFromScene(box.mapViewToScene(QPointF(view_x, y)))


def drawn(curve):
    """The x values a curve shows (pyqtgraph keeps None for no data)."""
    return [] if curve.xData is None else list(curve.xData)


def hover(qtbot, plot, pos, text):
    """Move the mouse to ``pos`` until the tip reads ``text`` (None: hidden).

    The move is sent to the viewport as Qt delivers it, not through the real cursor,
    which another test's window may cover on a shared display; it is repeated, as a
    hand's small moves are, since pyqtgraph drops moves that come too close together.
    """
    viewport = plot.view.viewport()

    def moved_and_shown():
        QApplication.sendEvent(viewport, QMouseEvent(
            QEvent.Type.MouseMove, QPointF(pos), QPointF(viewport.mapToGlobal(pos)),
            Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier))
        shown = plot._tip.toPlainText() if plot._tip.isVisible() else None
        return shown == text

    qtbot.waitUntil(moved_and_shown, timeout=3000)


def wheel(plot, pos, clicks):
    """Turn the mouse wheel over ``pos`` of the viewport (positive: zoom in)."""
    event = QWheelEvent(QPointF(pos), QPointF(plot.view.viewport().mapToGlobal(pos)), QPoint(),
                        QPoint(0, 120 * clicks), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(plot.view.viewport(), event)


def test_series_skip_bad_values_and_redraws_are_throttled(qtbot):
    plot = PlotWidget(xlabel="step", ylabel="loss")
    qtbot.addWidget(plot)
    plot.add_series("train loss", "#4fa3e0")
    curve = plot.curves["train loss"]
    plot.append("train loss", 1, 0.9)
    assert drawn(curve) == [1]  # the first point draws at once
    for step in range(2, 201):  # hundreds of points within one frame
        plot.append("train loss", step, 1 / step)
    plot.append("train loss", 201, None)
    plot.append("train loss", 202, math.nan)
    assert len(plot.series["train loss"].xs) == 200
    assert len(drawn(curve)) == 1  # not redrawn for each point
    qtbot.waitUntil(lambda: len(drawn(curve)) == 200, timeout=1000)
    assert curve.yData[-1] == pytest.approx(1 / 200)
    plot.set_data("train loss", [1, 2, 3], [0.5, 0.4, 0.3])
    qtbot.waitUntil(lambda: list(curve.yData) == [0.5, 0.4, 0.3], timeout=1000)
    plot.clear()
    qtbot.waitUntil(lambda: drawn(curve) == [], timeout=1000)
    assert plot.series["train loss"].xs == [] and plot.marker is None


def test_log_x_marker_and_hover(qtbot, show):
    plot = PlotWidget(xlabel="learning rate", ylabel="loss", log_x=True)
    plot.add_series("smoothed", "#4fa3e0")
    for lr, loss in [(0, 1.0), (1e-5, 0.7), (1e-4, 0.6), (1e-3, 0.5), (1e-2, 0.4), (1e-1, 0.9)]:
        plot.append("smoothed", lr, loss)  # lr 0 has no place on a log axis
    plot.set_marker(1e-3, "suggested 0.001")
    show(plot)
    assert plot.series["smoothed"].xs == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    (x0, x1), (y0, y1) = plot.plot_item.vb.viewRange()
    assert -5.5 < x0 < -5 and -1 < x1 < -0.5  # decades of the learning rate, not 0 to 0.1
    assert y0 < 0.4 and 0.9 < y1 < 1.0
    assert plot.marker == (1e-3, "suggested 0.001")
    assert plot._marker_line.value() == pytest.approx(-3)
    assert plot._marker_line.label.toPlainText() == "suggested 0.001"

    near = viewport_pos(plot, 1e-3, 0.5) + QPoint(6, -4)  # beside the point, not on it
    hover(qtbot, plot, near, "smoothed: 0.5\nlearning rate 0.001")
    hover(qtbot, plot, viewport_pos(plot, 1e-2, 0.4), "smoothed: 0.4\nlearning rate 0.01")
    hover(qtbot, plot, QPoint(2, 2), None)  # outside the axes


def test_right_axis_hover_zoom_and_reset(qtbot, show):
    plot = PlotWidget(xlabel="step", ylabel="loss", right_label="V_rand")
    plot.add_series("train loss", "#4fa3e0")
    plot.add_series("V_rand", "#6cc070", axis="right", points=True)
    for step in range(1, 101):
        plot.append("train loss", step, 0.7 - 0.004 * step)
    for step, v_rand in [(50, 0.8), (100, 0.9)]:
        plot.append("V_rand", step, v_rand)
    show(plot)
    assert plot.curves["V_rand"].getViewBox() is plot.right_box
    assert plot.plot_item.getAxis("right").labelText == "V_rand"
    assert plot.right_box.viewRange()[1][0] > 0.75  # the right axis fits V_rand, not the loss

    hover(qtbot, plot, viewport_pos(plot, 100, 0.9, box=plot.right_box), "V_rand: 0.9\nstep 100")

    box = plot.plot_item.vb
    full = box.viewRange()[0]
    wheel(plot, viewport_pos(plot, 50, 0.5), clicks=3)
    zoomed = box.viewRange()[0]
    assert zoomed[1] - zoomed[0] < 0.8 * (full[1] - full[0])
    assert plot.right_box.viewRange()[0] == pytest.approx(zoomed)  # x follows on the right
    plot.append("train loss", 101, 0.2)  # new data leaves the user's view alone
    qtbot.wait(2 * 1000 // MAX_FPS)
    assert box.viewRange()[0] == pytest.approx(zoomed)
    plot.plot_item.autoBtn.clicked.emit(plot.plot_item.autoBtn)  # the "A" button
    qtbot.wait(2 * 1000 // MAX_FPS)
    assert box.viewRange()[0][1] > full[1]  # the whole curve again, point 101 included


def test_fixed_y_range_until_the_user_zooms(qtbot, show):
    plot = PlotWidget(xlabel="learning rate", ylabel="loss", log_x=True)
    plot.add_series("loss", "#7d8590")
    for lr, loss in [(1e-4, 0.6), (1e-3, 0.4), (1e-2, 5.0)]:
        plot.append("loss", lr, loss)
    plot.set_ylim(0.3, 0.9)  # the diverging tail cut off
    show(plot)
    box = plot.plot_item.vb
    assert box.viewRange()[1] == pytest.approx([0.3, 0.9])
    wheel(plot, viewport_pos(plot, 1e-3, 0.5), clicks=2)
    zoomed = box.viewRange()[1]
    plot.set_ylim(0.2, 1.0)  # the next step of the sweep
    assert box.viewRange()[1] == pytest.approx(zoomed)
    plot.reset_view()
    assert box.viewRange()[1] == pytest.approx([0.2, 1.0])
    plot.set_colors(background="#ebe7e6", axes="#afacaa", text="#1e1e21")
    assert plot.view.backgroundBrush().color().name() == "#ebe7e6"
    assert plot.plot_item.getAxis("left").textPen().color().name() == "#1e1e21"
