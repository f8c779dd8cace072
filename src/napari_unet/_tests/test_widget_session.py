"""What the widgets share: the previews' settings reach training; previews are never inputs."""

import numpy as np
import pytest

from napari_unet._widgets import (
    AugmentPreview,
    CorrectWidget,
    ExportWidget,
    PredictionWidget,
    TrainingWidget,
    WeightsPreview,
)
from napari_unet._widgets.session import session
from napari_unet.model.files import load_model

WAIT = 10_000


@pytest.fixture
def viewer(make_napari_viewer, isbi_small):
    viewer = make_napari_viewer()
    viewer.add_image(isbi_small[0], name="em")
    viewer.add_labels(isbi_small[1], name="labels")
    return viewer


def test_preview_settings_are_what_training_uses(viewer, qtbot, tmp_path):
    weights, augment = WeightsPreview(viewer), AugmentPreview(viewer)
    viewer.window.add_dock_widget(weights)
    viewer.window.add_dock_widget(augment)
    weights.w0.value, weights.sigma.value = 7.5, 3.0
    augment.strength.value = 0.5
    assert augment.weight_config.w0 == 7.5  # the augmented weights use the same map
    trainer = TrainingWidget(viewer)
    qtbot.addWidget(trainer)  # closed and deleted by Qt at teardown, not by the collector
    for name, value in {"depth": 3, "base_channels": 4, "tile": 64, "batch_size": 2,
                        "epochs": 1, "val_slices": "3", "device": "cpu"}.items():
        getattr(trainer.form, name).value = value
    trainer.form.output.value = tmp_path / "m.pt"
    trainer.start()
    qtbot.waitUntil(lambda: not trainer.running, timeout=60_000)
    config = load_model(tmp_path / "m.pt").config
    assert (config.weights.w0, config.weights.sigma) == (7.5, 3.0)
    assert config.augment.strength == 0.5
    # A preview opened later starts from the shared settings.
    assert WeightsPreview(viewer).w0.value == 7.5


def test_previews_are_never_offered_as_inputs(viewer, qtbot):
    weights, augment = WeightsPreview(viewer), AugmentPreview(viewer)
    viewer.window.add_dock_widget(weights)
    viewer.window.add_dock_widget(augment)
    qtbot.waitUntil(lambda: weights.layer is not None and augment.samples is not None,
                    timeout=WAIT)
    inputs = {"em", "labels"}
    trainer, predictor = TrainingWidget(viewer), PredictionWidget(viewer)
    corrector, exporter = CorrectWidget(viewer), ExportWidget(viewer)
    pickers = [trainer.form.image_layer, trainer.form.labels_layer, predictor.image_layer,
               corrector.image_layer, corrector.mask_layer, corrector.original,
               exporter.mask, exporter.probabilities, exporter.cells]
    for picker in pickers:
        names = {layer.name for layer in picker.choices if layer is not None}
        assert names <= inputs, (picker.label, names)


def test_a_removed_preview_stops_following(viewer, qtbot):
    shared = session(viewer).weights
    preview = WeightsPreview(viewer)
    viewer.window.add_dock_widget(preview, name="weights")
    qtbot.waitUntil(lambda: preview.layer is not None, timeout=WAIT)
    viewer.window.remove_dock_widget(preview.native)
    viewer.layers.remove(preview.layer)
    viewer.dims.set_current_step(0, 2)
    qtbot.wait(300)
    assert "weight map" not in viewer.layers
    assert session(viewer).weights == shared
    np.testing.assert_array_equal(viewer.dims.current_step[0], 2)
