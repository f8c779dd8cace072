"""The weight map and augmentation previews in a real viewer with the ISBI 2012 sample."""

import numpy as np
import pytest

from napari_unet._widgets import augment_preview, weights_preview
from napari_unet._widgets.augment_preview import AugmentPreview, Samples, mosaic
from napari_unet._widgets.session import session
from napari_unet._widgets.weights_preview import WeightsPreview
from napari_unet.io.labels import annotation_to_isbi
from napari_unet.model.normalization import Normalization
from napari_unet.training.weights import WeightConfig, annotation_weight_map

PLUGIN = "napari-unet-em"
WAIT = 5000


@pytest.fixture
def sample_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "isbi2012")
    return viewer


def dock(viewer, widget_class):
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_weight_map_follows_slice_controls_and_edits(sample_viewer, qtbot, monkeypatch):
    calls = []
    compute = weights_preview.slice_weights
    monkeypatch.setattr(weights_preview, "slice_weights",
                        lambda *args: calls.append(args) or compute(*args))
    viewer = sample_viewer
    labels = viewer.layers["ISBI 2012 labels"].data
    viewer.dims.set_current_step(0, 3)
    session(viewer).set_settings(weights=WeightConfig())  # the paper's map (cpu: plain CE)
    widget = dock(viewer, WeightsPreview)
    qtbot.waitUntil(lambda: widget.layer is not None, timeout=WAIT)
    layer = viewer.layers["weight map"]
    assert layer is widget.layer and layer.data.shape == (1, 512, 512)
    assert layer.translate[0] == 3  # drawn on slice 3 only
    np.testing.assert_array_equal(layer.data[0], annotation_weight_map(labels[3]))
    assert layer.contrast_limits[1] == pytest.approx(layer.data.max())
    assert layer.contrast_limits[0] == pytest.approx(layer.data[layer.data > 0].min())
    assert widget.status.value.startswith("slice z=3")
    # Nothing changed, or changed and back within the debounce: no new computation.
    data = layer.data
    widget.refresh()
    widget.balance.value = False
    widget.balance.value = True
    qtbot.wait(150)
    assert len(calls) == 1 and layer.data is data

    widget.w0.value = 20.0
    qtbot.waitUntil(lambda: layer.data.max() > 15, timeout=WAIT)
    np.testing.assert_array_equal(layer.data[0], annotation_weight_map(labels[3], w0=20.0))

    viewer.dims.set_current_step(0, 7)
    qtbot.waitUntil(lambda: layer.translate[0] == 7, timeout=WAIT)
    np.testing.assert_array_equal(layer.data[0], annotation_weight_map(labels[7], w0=20.0))

    widget.w0.value, widget.balance.value, widget.membrane_weight.value = 0.0, False, 2.0
    qtbot.waitUntil(lambda: layer.data.max() == 2.0, timeout=WAIT)  # the cpu preset's map
    np.testing.assert_array_equal(layer.data[0], np.where(labels[7] == 1, 2.0, 1.0))
    assert session(viewer).weights == WeightConfig(w0=0.0, balance=False, membrane_weight=2.0)

    edited = labels.copy()
    edited[7, :256] = 0  # un-annotate the top half
    viewer.layers["ISBI 2012 labels"].data = edited
    qtbot.waitUntil(lambda: not layer.data[0, :256].any(), timeout=WAIT)
    assert [ly.name for ly in viewer.layers].count("weight map") == 1


def test_weight_map_problems_then_isbi_labels_in_an_image_layer(make_napari_viewer, qtbot,
                                                               isbi_small):
    image, labels = isbi_small[0][0], isbi_small[1][0]
    viewer = make_napari_viewer()
    widget = dock(viewer, WeightsPreview)
    widget.refresh()
    assert "open an EM image" in widget.status.value
    viewer.add_image(image, name="em")
    viewer.add_labels(np.ones((32, 32), np.uint8), name="small")
    widget.refresh()
    assert widget.status.value == ("problem: labels shape (32, 32) differs from image shape "
                                   "(128, 128)")
    viewer.add_labels(np.full((128, 128), 7, np.uint8), name="odd")
    widget.labels_layer.value = viewer.layers["odd"]
    widget.refresh()
    assert widget.status.value.startswith("problem: label values [7] fit no convention")
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), name="photo", rgb=True)
    widget.image_layer.value = viewer.layers["photo"]
    widget.refresh()
    assert widget.status.value == "problem: image 'photo' is RGB; convert it to one channel first"
    qtbot.wait(100)
    assert "weight map" not in viewer.layers and widget.layer is None

    viewer.add_image(annotation_to_isbi(labels), name="isbi labels")
    widget.image_layer.value = viewer.layers["em"]
    widget.labels_layer.value = viewer.layers["isbi labels"]
    qtbot.waitUntil(lambda: widget.layer is not None, timeout=WAIT)
    assert widget.layer.data.shape == (128, 128)  # a 2D image gets a 2D layer
    # the settings training will use (the device's preset until changed)
    np.testing.assert_array_equal(widget.layer.data, session(viewer).weights.of(labels))
    assert viewer.layers["weight map"] not in widget.image_layer.choices


def wait_for_samples(qtbot, widget, previous=None):
    qtbot.waitUntil(lambda: widget.samples is not previous and not widget.busy, timeout=WAIT)
    return widget.samples


def test_augment_preview_layers_reroll_and_strength(sample_viewer, qtbot):
    viewer = sample_viewer
    viewer.dims.set_current_step(0, 5)
    widget = dock(viewer, AugmentPreview)
    samples = wait_for_samples(qtbot, widget)
    assert samples.image.shape == samples.labels.shape == samples.weights.shape == (4, 512, 512)
    assert set(np.unique(samples.labels)) <= {0, 1, 2}
    layers = widget.layers
    assert [viewer.layers[name] for name in augment_preview.NAMES.values()] == list(
        layers.values())
    gap = augment_preview.mosaic_gap((512, 512))
    np.testing.assert_array_equal(layers["labels"].data[0],
                                  mosaic(samples.labels, columns=4, gap=gap))
    # Beside the data on slice 5: the images right of the EM, the weights below them.
    assert tuple(layers["image"].translate) == (5, 0, 512 + gap)
    assert tuple(layers["weights"].translate) == (5, 512 + gap, 512 + gap)

    widget.reroll.native.click()
    rerolled = wait_for_samples(qtbot, widget, samples)
    assert not np.array_equal(rerolled.image, samples.image)

    widget.count.value, widget.strength.value = 2, 0.0
    same = wait_for_samples(qtbot, widget, rerolled)
    image, labels = (viewer.layers[name].data[5] for name in ("ISBI 2012 EM", "ISBI 2012 labels"))
    assert len(same.image) == 2
    for i in range(2):
        np.testing.assert_array_equal(same.image[i], Normalization.of(image).unit(image))
        np.testing.assert_array_equal(same.labels[i], labels)
        np.testing.assert_array_equal(same.weights[i], session(viewer).weights.of(labels))


def test_augment_samples_strength_zero_without_qt():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (24, 24)).astype(np.uint16)
    labels = np.ones((24, 24), np.uint8)
    labels[2:10, 2:10] = labels[12:20, 12:20] = 2
    run = augment_preview.augment_samples(
        image, labels, weight_config=weights_preview.WeightConfig(),
        augment_config=augment_preview.AugmentConfig(strength=0.0), seed=1, count=3)
    assert [next(run) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(StopIteration) as done:
        next(run)
    samples = done.value.value
    assert isinstance(samples, Samples) and samples.image.dtype == np.float32
    np.testing.assert_array_equal(samples.labels, np.stack([labels] * 3))


def test_closing_the_viewer_while_augmenting_does_not_crash(sample_viewer, qtbot):
    widget = dock(sample_viewer, AugmentPreview)
    widget.count.value = 8
    qtbot.waitUntil(lambda: widget.busy, timeout=WAIT)
    worker = widget._worker
    sample_viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT)
    qtbot.wait(50)
    assert widget.samples is None  # the worker was quit, its result never applied
