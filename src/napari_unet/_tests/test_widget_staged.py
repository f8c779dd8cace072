"""A layer added to napari in steps, a turn of the event loop each (the validation preview)."""

import numpy as np
from napari._qt import qt_viewer
from napari.components import ViewerModel
from napari.layers import Image
from qtpy.QtCore import QObject

from napari_unet._widgets.staged import Turns, adding_steps


def test_turns_run_their_steps_in_order_one_at_a_time(qtbot):
    parent, done = QObject(), []
    turns = Turns(parent, interval=1)
    turns.add(lambda: done.append(1), lambda: done.append(2))
    turns.add(lambda: done.append(3))
    assert turns.pending and done == []  # none before the event loop turns
    qtbot.waitUntil(lambda: not turns.pending, timeout=5_000)
    assert done == [1, 2, 3]


def test_a_layer_added_in_steps_is_made_once_ahead_and_left_unselected(
        make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    chosen = viewer.add_image(np.zeros((4, 8, 8)), name="em")
    viewer.add_labels(np.zeros((4, 8, 8), np.uint8), name="labels")
    viewer.layers.selection.active = chosen
    made = []
    create = qt_viewer.create_vispy_layer
    monkeypatch.setattr(qt_viewer, "create_vispy_layer",
                        lambda layer, *args, **kwargs: made.append(layer) or create(
                            layer, *args, **kwargs))
    layer = Image(np.ones((1, 8, 8)), name="preview", translate=(2, 0, 0))
    steps = adding_steps(viewer, layer)
    assert len(steps) == 4  # make the controls, stack them, make the vispy node, append
    for step in steps[:-1]:
        step()
    assert layer not in viewer.layers and made == [layer]
    steps[-1]()
    assert layer in viewer.layers and made == [layer]  # napari took the node made ahead
    assert viewer.layers.selection.active is chosen and list(viewer.layers.selection) == [
        chosen]
    controls = viewer.window._qt_viewer.controls
    assert set(controls.widgets) == set(viewer.layers)
    assert controls.count() == len(viewer.layers) + 1  # and its empty panel
    viewer.layers.selection.active = layer
    assert controls.currentWidget() is controls.widgets[layer]


def test_without_napari_qt_a_layer_is_added_in_one_step_unselected():
    viewer = ViewerModel()
    chosen = viewer.add_image(np.zeros((8, 8)), name="em")
    layer = Image(np.ones((8, 8)), name="preview")
    (step,) = adding_steps(viewer, layer)
    step()
    assert layer in viewer.layers and viewer.layers.selection.active is chosen
