"""Add a layer to napari over a few turns of the event loop, none of them a long stall.

``viewer.add_layer`` does everything in one turn: the layer's vispy node, its controls
panel (made and put in the controls' stack) and, as it selects the new layer, the
switch of panels. While the Training widget trained on 2 cores, adding the validation
preview that way held the event loop 130-230 ms (benchmarks/bench_responsiveness.py).
`adding_steps` splits it: the controls panel is made, then stacked, then the vispy node
is made, and then the layer is appended with both ready; the user's selection is left
as it is. `Turns` runs such steps a few milliseconds apart, so that the loop repaints
and answers the user between them.

The split relies on napari's Qt internals (``QtLayerControlsContainer``, the
``create_vispy_layer`` that ``QtViewer`` calls); where they are not as expected, or
napari's dynamic layer controls are on, that part is done when the layer is appended,
as napari does it, and the layer is added unselected all the same.
"""

from collections import deque
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

from qtpy.QtCore import QObject, QTimer

STEP_MS = 15
"""Time between two steps: the loop's other events (repaints, input) come in between."""


class Turns:
    """Run callables one at a time, `STEP_MS` apart, at turns of the Qt event loop.

    Parameters
    ----------
    parent : QObject
        Owns the timer: once it is deleted, the steps left never run.
    """

    def __init__(self, parent: QObject, interval: int = STEP_MS):
        self._steps: deque[Callable[[], object]] = deque()
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval)
        self._timer.timeout.connect(self._next)

    @property
    def pending(self) -> bool:
        """Whether steps are waiting to run."""
        return bool(self._steps)

    def add(self, *steps: Callable[[], object]) -> None:
        """Queue steps after those waiting; the next one runs ``interval`` ms from now."""
        self._steps.extend(steps)
        if self._steps and not self._timer.isActive():
            self._timer.start()

    def _next(self) -> None:
        try:
            if self._steps:
                self._steps.popleft()()
        finally:
            if self._steps:
                self._timer.start()


def adding_steps(viewer, layer) -> list[Callable[[], None]]:
    """Return the steps that add ``layer`` to ``viewer`` without selecting it.

    Run them in order, one a turn (`Turns`); the layer is in ``viewer.layers`` after
    the last. On an idle machine each took 20-40 ms, where ``viewer.add_layer`` took
    about 100 ms; while training on 2 cores, 25-65 ms, where it took 130-230 ms.
    """
    made = {}
    steps = []
    box = _controls_container(viewer)
    if box is not None:
        from napari._qt.layer_controls.qt_layer_controls_container import (
            create_qt_layer_controls,
        )

        def make_controls():
            made["controls"] = create_qt_layer_controls(layer)
            made["controls"].ndisplay = viewer.dims.ndisplay

        def stack_controls():
            box.addWidget(made["controls"])  # not shown: the stack shows the selected layer's

        steps += [make_controls, stack_controls]
    qt_viewer = _qt_viewer_module(viewer)
    if qt_viewer is not None:
        module, canvas = qt_viewer

        def make_node():
            made["node"] = module.create_vispy_layer(layer, font_info=canvas.font_info())

        steps.append(make_node)

    def append():
        _append(viewer, layer, box, made.get("controls"), made.get("node"))

    return [*steps, append]


def _qt_viewer_module(viewer):
    """Return ``napari._qt.qt_viewer`` and the canvas, when the vispy node can be made ahead."""
    try:
        from napari._qt import qt_viewer as module

        canvas = viewer.window._qt_viewer.canvas
    except (AttributeError, ImportError):
        return None
    usable = (callable(getattr(module, "create_vispy_layer", None))
              and callable(getattr(canvas, "font_info", None))
              and isinstance(getattr(canvas, "layer_to_visual", None), dict))
    return (module, canvas) if usable else None


def _controls_container(viewer):
    """Return napari's QtLayerControlsContainer, when its panels can be made ahead; else None."""
    try:
        from napari._qt.layer_controls import qt_layer_controls_container as module
        from napari.settings import get_settings

        box = viewer.window._qt_viewer.controls
        dynamic = get_settings().experimental.dynamic_layer_controls
    except (AttributeError, ImportError):
        return None
    usable = (isinstance(box, module.QtLayerControlsContainer)
              and isinstance(getattr(box, "widgets", None), dict)
              and callable(getattr(box, "_add", None))
              and callable(getattr(module, "create_qt_layer_controls", None)))
    return box if usable and not dynamic else None


def _append(viewer, layer, box=None, controls=None, node=None) -> None:
    """Append the layer, unselected, with its controls panel and vispy node when made ahead."""
    layers = viewer.layers
    # napari selects an inserted layer (and shows its panel): the user's selection stays.
    activate = getattr(layers, "_activate_on_insert", True)
    layers._activate_on_insert = False
    try:
        with ExitStack() as stack:
            if controls is not None:  # QtLayerControlsContainer._add would make another
                stack.enter_context(layers.events.inserted.blocker(box._add))
            if node is not None:  # QtViewer._add_layer makes the node with this
                stack.enter_context(_made_ahead(layer, node))
            layers.append(layer)
        if controls is not None:
            box.widgets[layer] = controls
    finally:
        layers._activate_on_insert = activate
    if node is not None and viewer.window._qt_viewer.canvas.layer_to_visual.get(layer) is not node:
        node.close()  # napari made its own


@contextmanager
def _made_ahead(layer, node):
    """Within the block, napari's QtViewer gets ``node`` as the vispy node of ``layer``."""
    from napari._qt import qt_viewer as module

    create = module.create_vispy_layer

    def create_or_take(new, *args, **kwargs):
        return node if new is layer else create(new, *args, **kwargs)

    module.create_vispy_layer = create_or_take
    try:
        yield
    finally:
        module.create_vispy_layer = create
