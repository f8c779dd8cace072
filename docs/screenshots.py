"""Regenerate every picture in docs/images/ in one run (under ``xvfb-run -a`` when headless).

Each picture is the whole napari window at 1400x900, as a user sees it, taken from one
demo viewer (the ISBI 2012 sample, every widget docked) walked through the tutorial:
the weight map and augmentation previews, a short real training of a small network on
the CPU, prediction of the stack with it, the two least sure slices of the mask (the
"correct next" list) corrected and a short retraining, and an export. Model files and
exports go to a scratch folder that is removed at the end. About 5 minutes on a 2-core CPU.

The first picture is the demo's own (`demo`). Before each of the others the layers not
under discussion are hidden, and the augmentation preview's layers are deleted (the widget
brings them back at the next slice change): `save_screenshot` fits the view to every layer,
hidden or not, and the sample mosaic lies beside the image.
"""

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from napari._qt.dialogs.qt_notification import NapariQtNotification
from qtpy.QtWidgets import QAbstractSpinBox, QApplication, QLineEdit
from scipy.ndimage import uniform_filter

from napari_unet._widgets.demo import (
    PLUGIN,
    build_demo_viewer,
    save_screenshot,
    settle,
    show_first_look,
)
from napari_unet._widgets.session import slice_ranking

IMAGES = Path(__file__).parent / "images"
SCRATCH = Path(tempfile.gettempdir()) / "napari-unet-docs"
EM, LABELS = "ISBI 2012 EM", "ISBI 2012 labels"
PROBABILITY, MASK, CELLS = "membrane probability", "membrane mask", "cells"
UNCERTAINTY = "membrane uncertainty"
AUGMENTED = ("augmented image", "augmented labels", "augmented weights")
START = time.monotonic()


def wait(condition=lambda: True, *, seconds: float = 0.5, timeout: float = 600) -> None:
    """Process Qt events for at least ``seconds`` and until ``condition()`` holds."""
    start = time.monotonic()
    while time.monotonic() - start < seconds or not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.05)


def raise_widget(viewer, name: str):
    """Bring a docked widget's tab to the front and return the widget."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    dock.raise_()
    wait()
    return widget


def go_to_slice(viewer, z: int) -> None:
    viewer.dims.set_current_step(0, z)
    wait()


def drop_augmented(viewer, keep) -> None:
    """Delete the augmentation preview's layers (except ``keep``) until they stay away."""
    previews = viewer.window.add_plugin_dock_widget(PLUGIN, "Augmentation preview")[1]
    while True:
        wait(lambda: not previews.busy, seconds=1.5)
        extra = [ly for ly in viewer.layers if ly.name in AUGMENTED and ly.name not in keep]
        if not extra:
            return
        for layer in extra:
            viewer.layers.remove(layer)


def shot(viewer, name: str, *visible: str, select: str, fit: bool = True) -> None:
    """Show only the ``visible`` layers, select one, and save the window as ``name``.

    ``fit`` fits the view to the layers; without it the view stays where it is.
    """
    drop_augmented(viewer, visible)
    for layer in viewer.layers:
        layer.visible = layer.name in visible
    viewer.layers.selection.active = viewer.layers[select]
    window = viewer.window._qt_window
    for toast in window.findChildren(NapariQtNotification):
        toast.close()
    for box in window.findChildren(QAbstractSpinBox):  # values set here stay highlighted
        box.findChild(QLineEdit).deselect()
    wait()
    seconds = time.monotonic() - START
    print(f"saved {save_screenshot(viewer, IMAGES / name, fit=fit)} at {seconds:.0f} s",
          flush=True)


def demo(viewer) -> None:
    """Save the demo's own picture, as `napari-unet demo --screenshot` takes it."""
    viewer.window.resize(1400, 900)
    settle(viewer)
    show_first_look(viewer)
    seconds = time.monotonic() - START
    print(f"saved {save_screenshot(viewer, IMAGES / 'demo.png', fit=False)} at {seconds:.0f} s",
          flush=True)


def weights_preview(viewer) -> None:
    raise_widget(viewer, "Weight map preview")
    go_to_slice(viewer, 12)
    shot(viewer, "weights-preview.png", EM, "weight map", select="weight map")


def augment_preview(viewer) -> None:
    widget = raise_widget(viewer, "Augmentation preview")
    go_to_slice(viewer, 12)
    widget.refresh()  # its layers were deleted for the earlier pictures
    wait(lambda: all(layer in viewer.layers for layer in widget.layers.values()))
    shot(viewer, "augment-preview.png", EM, LABELS, *AUGMENTED, select="augmented image")


def training(viewer) -> None:
    """Train a small network for 2 minutes on the CPU."""
    widget = raise_widget(viewer, "Training")
    form = widget.form
    form.depth.value, form.base_channels.value = 4, 8
    form.tile.value, form.batch_size.value = 128, 4
    form.optimizer.value, form.lr.value = "adam", "0.001"
    form.epochs.value, form.minutes.value = 40, 2
    form.val_slices.value, form.device.value = "5,15,25", "cpu"
    form.output.value = SCRATCH / "model.pt"
    widget.start()
    wait(lambda: not widget.running)
    shot(viewer, "training.png", EM, "validation prediction", select="validation prediction")


def prediction(viewer) -> None:
    """Predict the stack with the model just trained (the current model)."""
    widget = raise_widget(viewer, "Prediction")
    widget.device.value = "cpu"
    widget.cells.value = True
    widget.predict_stack()
    wait(lambda: not widget.running)
    go_to_slice(viewer, 14)
    shot(viewer, "prediction.png", EM, PROBABILITY, select=PROBABILITY)


def correct(viewer) -> None:
    """Correct the two least sure slices of the mask ("correct next"), then retrain."""
    widget = raise_widget(viewer, "Correct and retrain")
    mask, truth = viewer.layers[MASK], viewer.layers[LABELS].data
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom *= 1.6
    widget.go_next()  # the least sure slice, centred on its least sure square
    first = viewer.dims.current_step[0]
    viewer.layers[UNCERTAINTY].visible = True
    shot(viewer, "correct-next.png", EM, UNCERTAINTY, select=UNCERTAINTY, fit=False)
    mask.visible = True  # napari paints the slice it shows
    false_membrane = uniform_filter(((mask.data[first] == 1) & (truth[first] == 2)).astype(float),
                                    15)
    mask.brush_size = 15
    mask.paint((first, *np.unravel_index(false_membrane.argmax(), false_membrane.shape)), 2)
    widget.go_next()
    second = viewer.dims.current_step[0]
    box = np.zeros(mask.data.shape, bool)
    y, x = slice_ranking(mask).hotspot(second)
    box[second, max(0, y - 112):y + 112, max(0, x - 112):x + 112] = True  # as it should be
    wrong = np.nonzero(box & (mask.data != truth))
    mask.data_setitem(wrong, truth[wrong])
    widget.device.value = "cpu"
    widget.epochs.value, widget.minutes.value = 1, 0
    widget.retrain()
    wait(lambda: not widget.running)
    shot(viewer, "correct.png", EM, MASK, select=MASK)


def export(viewer) -> None:
    widget = raise_widget(viewer, "Export")
    folder = SCRATCH / "export"
    folder.mkdir()
    widget.folder.value = folder
    widget.name.value = "isbi2012"
    widget.export()
    wait(lambda: not widget.running)
    widget.save_path.value = folder / "isbi2012.pt"
    widget.save_model()
    shot(viewer, "export.png", EM, CELLS, select=CELLS)


def main() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir()
    viewer = build_demo_viewer()
    try:
        demo(viewer)
        weights_preview(viewer)
        augment_preview(viewer)
        training(viewer)
        prediction(viewer)
        correct(viewer)
        export(viewer)
    finally:
        viewer.close()
        shutil.rmtree(SCRATCH, ignore_errors=True)
    print(f"done in {time.monotonic() - START:.0f} s")


if __name__ == "__main__":
    main()
