"""The demo: napari with the ISBI 2012 sample, every plugin widget docked, and a prediction.

The Prediction widget predicts the slice in view with the bundled ISBI 2012 model as soon
as it opens, so the demo shows a membrane mask before anything is trained. The previews
and the first look run in the background and finish in any order; the demo waits for all
of them (`settle`) and then sets one picture (`show_first_look`), so every run looks alike.
"""

import time
from pathlib import Path

import napari
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication, QDockWidget, QWidget

from .layers import is_predicted, is_preview

PLUGIN = "napari-unet-em"
WIDGETS = ("Data", "Training", "Weight map preview", "Augmentation preview", "Prediction",
           "Correct and retrain", "Export")
TABBED = WIDGETS[2:]  # tabs beside Training, below Data
TABS = {"Training": "Training", "Weight map preview": "Weight map",
        "Augmentation preview": "Augmentation", "Prediction": "Prediction",
        "Correct and retrain": "Correct", "Export": "Export"}
"""Tab titles of the widgets in the tab group below Data. napari titles a dock "Name (plugin)",
which six tabs cannot show side by side in a 1400 px window; a dock's title bar keeps it."""


def build_demo_viewer(*, show: bool = True) -> napari.Viewer:
    """Return a viewer holding the ISBI 2012 sample with the plugin's widgets docked."""
    viewer = napari.Viewer(title="napari-unet", show=show)
    dock_demo(viewer)
    return viewer


def dock_demo(viewer: napari.Viewer) -> None:
    """Open the ISBI 2012 sample in ``viewer`` and dock every widget of the plugin.

    Data goes on top and the others become tabs below it, titled by `TABS`, Training in front.
    """
    viewer.open_sample(PLUGIN, "isbi2012")
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=name in TABBED)[0]
             for name in WIDGETS}
    for name, title in TABS.items():
        docks[name].setWindowTitle(title)
    QApplication.processEvents()
    docks["Training"].raise_()


def busy(viewer: napari.Viewer) -> bool:
    """Whether a docked widget is still at work: a job, a preview drawing, a redraw pending."""
    for widget in viewer.window.dock_widgets.values():
        if getattr(widget, "running", False) or getattr(widget, "busy", False):
            return True
        native = getattr(widget, "native", widget)
        timers = native.findChildren(QTimer) if isinstance(native, QWidget) else []
        if any(timer.isActive() and timer.isSingleShot() for timer in timers):
            return True
    return False


def closed(viewer: napari.Viewer) -> bool:
    """Whether the viewer's window was closed (napari drops its Qt window then)."""
    return not hasattr(viewer.window, "_qt_window")


def settle(viewer: napari.Viewer, *, timeout: float = 120.0, quiet: float = 0.5) -> bool:
    """Process events until no widget has been `busy` for ``quiet`` seconds.

    A finished job still hands its result to the main thread, where new layers start the
    previews again: hence a quiet spell rather than one idle moment. Returns False on
    timeout, or when the user closes the window meanwhile.
    """
    end = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < end:
        QApplication.processEvents()
        if closed(viewer):
            return False
        now = time.monotonic()
        if busy(viewer):
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= quiet:
            return True
        time.sleep(0.02)
    return False


def _rank(layer) -> int:
    """Layer order of the demo, bottom up: the sample, the previews, the predictions."""
    if is_preview(layer):
        return 1
    return 2 if is_predicted(layer) else 0


def _fit_layer_controls(viewer: napari.Viewer) -> None:
    """Give the layer controls the height they ask for and the layer list the rest.

    Qt grows a dock to fit the tallest controls shown so far and never shrinks it back, so the
    split would depend on which layers happened to be selected while the demo started.
    """
    window = viewer.window._qt_window  # napari offers no public handle on its QMainWindow
    left = sorted((dock for dock in window.findChildren(QDockWidget) if dock.isVisible()
                   and window.dockWidgetArea(dock) == Qt.DockWidgetArea.LeftDockWidgetArea),
                  key=lambda dock: dock.y())
    if len(left) == 2:  # layer controls over the layer list
        controls = left[0].sizeHint().height()
        total = sum(dock.height() for dock in left)
        window.resizeDocks(left, [controls, total - controls], Qt.Orientation.Vertical)


def show_first_look(viewer: napari.Viewer) -> None:
    """Set the demo's picture, the same whatever finished first.

    The first look goes on top of the sample, the previews' layers are hidden (the previews
    stay docked), the newest prediction is selected and the view fits the sample.
    """
    for index, layer in enumerate(sorted(viewer.layers, key=_rank)):
        viewer.layers.move(viewer.layers.index(layer), index)
    for layer in viewer.layers:
        if is_preview(layer):
            layer.visible = False
    shown = [layer for layer in viewer.layers if not is_preview(layer)]
    if shown:
        viewer.layers.selection.active = shown[-1]
    QApplication.processEvents()
    _fit_layer_controls(viewer)
    QApplication.processEvents()  # the canvas takes its final size before the view fits it
    viewer.reset_view(layers=shown)
    QApplication.processEvents()


def save_screenshot(viewer: napari.Viewer, path: str | Path, *, fit: bool = True) -> Path:
    """Save the whole window, as a user sees it at 1400x900, to a PNG file.

    ``fit`` fits the view to every layer first; without it the view stays as it is.
    """
    viewer.window.resize(1400, 900)
    end = time.monotonic() + 0.5  # the status bar and the thumbnails update in the background
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    if fit:
        viewer.reset_view()
        QApplication.processEvents()
    viewer.screenshot(str(path), canvas_only=False)
    return Path(path)


def reader_patterns() -> list[str]:
    """Return the file name patterns of the plugin's reader, from its manifest.

    napari must have loaded its plugins first, as creating a viewer does.
    """
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return [pattern for reader in manifest.contributions.readers
            for pattern in reader.filename_patterns]


def prefer_plugin_reader(settings=None) -> list[str]:
    """Make napari-unet napari's reader for TIFF files, unless the user already chose one.

    napari's builtin reader claims ``*.tif`` too, and with two readers and no preference
    napari asks which one to use on every open. This sets napari's own preference
    (``plugins.extension2reader``, Preferences > Plugins; napari stores it per Python
    environment) for the patterns in the manifest, and leaves every pattern alone once
    any of them has a reader chosen.

    Returns
    -------
    patterns : list of str
        The patterns set now (none when a reader was chosen before).
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    chosen = settings.plugins.extension2reader
    patterns = reader_patterns()
    if any(pattern in chosen for pattern in patterns):
        return []
    settings.plugins.extension2reader = {**chosen, **dict.fromkeys(patterns, PLUGIN)}
    return patterns


def open_demo(*, screenshot: str | None = None) -> int:
    """Open the demo; with ``screenshot`` save a PNG of the window and close."""
    viewer = build_demo_viewer()
    if prefer_plugin_reader():
        print("napari now opens .tif and .tiff files with napari-unet "
              "(Preferences > Plugins changes it)")
    if screenshot:
        viewer.window.resize(1400, 900)
    settle(viewer)
    if closed(viewer):
        return 0
    show_first_look(viewer)
    if screenshot:
        print(f"saved {save_screenshot(viewer, screenshot, fit=False)}")
        viewer.close()
        return 0
    napari.run()
    return 0
