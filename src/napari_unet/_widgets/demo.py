"""The demo: napari with the ISBI 2012 sample, every plugin widget docked, and a prediction.

The Prediction widget predicts the slice in view with the bundled ISBI 2012 model as soon
as it opens, so the demo shows a membrane mask before anything is trained.
"""

import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-unet-em"
WIDGETS = ("Data", "Training", "Weight map preview", "Augmentation preview", "Prediction",
           "Correct and retrain", "Export")
TABBED = WIDGETS[2:]  # tabs beside Training


def build_demo_viewer(*, show: bool = True) -> napari.Viewer:
    """Return a viewer holding the ISBI 2012 sample with the plugin's widgets docked."""
    viewer = napari.Viewer(title="napari-unet", show=show)
    viewer.open_sample(PLUGIN, "isbi2012")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=name in TABBED)[0]
             for name in WIDGETS}
    QApplication.processEvents()
    docks["Training"].raise_()
    return viewer


def wait_for_prediction(viewer: napari.Viewer, timeout: float = 120.0) -> None:
    """Process events until the Prediction widget's first prediction is on screen."""
    from .prediction import PredictionWidget

    widget = next((w for w in viewer.window.dock_widgets.values()
                   if isinstance(w, PredictionWidget)), None)
    end = time.monotonic() + timeout
    QApplication.processEvents()
    while widget is not None and widget.running and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def show_sample(viewer: napari.Viewer) -> None:
    """Hide the previews' layers and fit the view to the sample (the previews stay docked)."""
    from .session import is_preview

    for layer in viewer.layers:
        if is_preview(layer):
            layer.visible = False
    viewer.reset_view(layers=[layer for layer in viewer.layers if not is_preview(layer)])


def save_screenshot(viewer: napari.Viewer, path: str | Path) -> Path:
    """Save the whole window, as a user sees it at 1400x900, to a PNG file."""
    viewer.window.resize(1400, 900)
    wait_for_prediction(viewer)
    for _ in range(5):
        QApplication.processEvents()
    show_sample(viewer)
    QApplication.processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    return Path(path)


def open_demo(*, screenshot: str | None = None) -> int:
    """Open the demo; with ``screenshot`` save a PNG of the window and close."""
    viewer = build_demo_viewer()
    if screenshot:
        print(f"saved {save_screenshot(viewer, screenshot)}")
        viewer.close()
        return 0
    napari.run()
    return 0
