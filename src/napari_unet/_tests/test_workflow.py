"""The whole workflow in one real viewer: ISBI sample, train, predict, correct, retrain, export."""

import numpy as np
import tifffile

from napari_unet._widgets import CorrectWidget, ExportWidget, PredictionWidget, TrainingWidget
from napari_unet._widgets.prediction import CELLS, MASK, PROBABILITY
from napari_unet._widgets.session import session
from napari_unet.io.stacks import read_labels

TINY = {"depth": 3, "base_channels": 4, "tile": 64, "batch_size": 4, "epochs": 1,
        "minutes": 0.05, "val_slices": "29", "device": "cpu", "lr": "0.01"}


def dock(viewer, widget, name):
    viewer.window.add_dock_widget(widget, name=name)
    return widget


def finish(qtbot, widget, timeout=120_000):
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_sample_to_exported_masks(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet-em", "isbi2012")
    image = viewer.layers["ISBI 2012 EM"].data
    trainer = dock(viewer, TrainingWidget(viewer), "Training")
    predictor = dock(viewer, PredictionWidget(viewer), "Prediction")
    corrector = dock(viewer, CorrectWidget(viewer), "Correct and retrain")
    exporter = dock(viewer, ExportWidget(viewer), "Export")

    # Train a tiny network for a few seconds; the model becomes the current one.
    for name, value in TINY.items():
        getattr(trainer.form, name).value = value
    trainer.form.output.value = tmp_path / "model.pt"
    trainer.start()
    finish(qtbot, trainer)
    assert trainer.status.text().startswith("finished (time budget)"), trainer.status.text()
    assert session(viewer).model == tmp_path / "model.pt"
    assert predictor.model.value == tmp_path / "model.pt"

    # Predict the stack: probabilities, an editable mask and cells appear.
    predictor.device.value = "cpu"
    predictor.batch_size.value = 8
    predictor.cells.value = True
    predictor.predict_stack()
    finish(qtbot, predictor)
    mask = viewer.layers[MASK]
    assert mask.data.shape == image.shape and set(np.unique(mask.data)) <= {1, 2}

    # Paint a correction on slice 7: it is listed, and retraining fine-tunes on it.
    viewer.dims.set_current_step(0, 7)
    mask.brush_size = 9
    mask.paint((7, 100, 100), 1)
    assert corrector.mask_layer.value is mask and corrector.corrected == [7]
    corrected = mask.data[7].copy()
    corrector.device.value = "cpu"
    corrector.epochs.value = 1
    corrector.minutes.value = 0.05
    corrector.retrain()
    finish(qtbot, corrector)
    retrained = tmp_path / "model-retrained.pt"
    assert retrained.is_file() and session(viewer).model == retrained
    assert predictor.model.value == retrained

    # Predicting again with the new model keeps the corrected slice.
    predictor.predict_stack()
    finish(qtbot, predictor)
    np.testing.assert_array_equal(mask.data[7], corrected)

    # Export, then read the files back.
    exporter.folder.value = tmp_path
    exporter.export()
    finish(qtbot, exporter)
    written = tifffile.imread(tmp_path / "ISBI 2012 EM_mask.tif")
    assert written.dtype == np.uint8 and written.shape == image.shape
    np.testing.assert_array_equal(written, np.where(mask.data == 1, 255, 0))
    np.testing.assert_array_equal(read_labels(tmp_path / "ISBI 2012 EM_mask.tif"), mask.data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ISBI 2012 EM_probabilities.tif"),
                                  viewer.layers[PROBABILITY].data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "ISBI 2012 EM_cells.tif"),
                                  viewer.layers[CELLS].data)
