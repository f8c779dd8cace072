"""The Prediction widget in a real viewer, with a tiny untrained network on 128x128 crops."""

import dataclasses

import numpy as np
import pytest

from napari_unet._widgets import runner
from napari_unet._widgets.prediction import (
    CELLS,
    MASK,
    PROBABILITY,
    UNCERTAINTY,
    PredictionWidget,
)
from napari_unet._widgets.session import slice_ranking
from napari_unet.model.files import load_model, save_model
from napari_unet.prediction.postprocess import cell_labels, membrane_mask
from napari_unet.prediction.uncertainty import uncertainty_map


@pytest.fixture
def widget(make_napari_viewer, isbi_small, qtbot, monkeypatch):
    errors = []
    monkeypatch.setattr(runner, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(isbi_small[0], name="em")
    widget = PredictionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Prediction")
    widget.device.value = "cpu"
    widget.errors = errors
    yield widget
    worker = widget._worker
    if worker is not None:
        worker.quit()
        qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def run(qtbot, widget, action):
    action()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)
    assert not widget.errors, widget.errors


def test_model_sets_tile_threshold_and_summary(widget, model_path):
    widget.model.value = model_path
    assert widget.threshold.value == pytest.approx(0.42)
    assert widget.tile.value == 64
    assert "depth 3, width 4" in widget.summary.text()


def test_gap_closing_follows_the_model(widget, model_path, qtbot, tmp_path):
    widget.model.value = model_path
    assert widget.close_gaps.value == 0  # the model closes no gaps
    model_file = load_model(model_path)
    closing = save_model(tmp_path / "closing.pt", dataclasses.replace(
        model_file, config=model_file.config.replace(train={"close_gaps": 0.3})))
    widget.model.value = closing
    assert widget.close_gaps.value == pytest.approx(0.3)
    assert "gaps closed at 0.3" in widget.summary.text()
    run(qtbot, widget, widget.predict_stack)
    layers = widget._viewer.layers
    np.testing.assert_array_equal(layers[MASK].data, membrane_mask(
        layers[PROBABILITY].data, threshold=0.42, close_gaps=0.3))


def test_predict_stack_adds_its_layers(widget, model_path, qtbot, isbi_small):
    widget.model.value = model_path
    widget.threshold.value = 0.5
    widget.cells.value = True
    run(qtbot, widget, widget.predict_stack)
    layers = widget._viewer.layers
    prob, mask, cells = layers[PROBABILITY].data, layers[MASK].data, layers[CELLS].data
    assert prob.shape == mask.shape == cells.shape == isbi_small[0].shape
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {1, 2}
    np.testing.assert_array_equal(mask, np.where(prob > 0.5, 1, 2))
    np.testing.assert_array_equal(cells, cell_labels(prob, threshold=0.5, min_size=30))
    assert widget.progress.value() == widget.progress.maximum() > 0
    # the uncertainty, hidden, and the slices ranked by it on the mask
    unsure = layers[UNCERTAINTY]
    assert not unsure.visible
    np.testing.assert_allclose(unsure.data, uncertainty_map(prob, threshold=0.5), atol=1e-6)
    ranking = slice_ranking(layers[MASK])
    np.testing.assert_allclose(ranking.slices, unsure.data.mean(axis=(1, 2)), rtol=1e-5)
    assert sorted(ranking.order()) == [0, 1, 2, 3]
    # Outputs are not offered as inputs.
    assert widget.image_layer.choices == (layers["em"],)


def test_slice_runs_fill_one_slice_of_the_same_layers(widget, model_path, qtbot):
    widget.model.value = model_path
    viewer = widget._viewer
    viewer.dims.set_current_step(0, 1)
    run(qtbot, widget, widget.predict_slice)
    prob_layer, mask_layer = viewer.layers[PROBABILITY], viewer.layers[MASK]
    assert mask_layer.data.shape == (4, 128, 128)
    assert set(np.unique(mask_layer.data[1])) <= {1, 2} and mask_layer.data[1].min() > 0
    for z in (0, 2, 3):
        assert not mask_layer.data[z].any() and not prob_layer.data[z].any()
    viewer.dims.set_current_step(0, 2)
    run(qtbot, widget, widget.predict_slice)
    assert viewer.layers[PROBABILITY] is prob_layer and viewer.layers[MASK] is mask_layer
    assert len(viewer.layers) == 4  # image, probabilities, mask, uncertainty
    unsure = viewer.layers[UNCERTAINTY].data
    assert unsure[1:3].any() and not unsure[[0, 3]].any()
    ranking = slice_ranking(mask_layer)  # the slices predicted so far, each scored alone
    assert sorted(ranking.order()) == [1, 2]
    np.testing.assert_allclose(ranking.slices[1:3], unsure[1:3].mean(axis=(1, 2)), rtol=1e-5)
    assert mask_layer.data[2].min() > 0 and mask_layer.data[1].min() > 0
    assert not mask_layer.data[[0, 3]].any()
    np.testing.assert_array_equal(mask_layer.data[1:3],
                                  np.where(prob_layer.data[1:3] > 0.42, 1, 2))


def test_bad_model_file_reports_and_adds_nothing(widget, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    widget.model.value = bad
    assert widget.errors and "not a napari-unet model" in widget.errors[-1]
    assert widget.status.text().startswith("error:")
    widget.predict_stack()
    assert not widget.running and len(widget._viewer.layers) == 1


def test_second_run_is_refused(widget, model_path, qtbot):
    widget.model.value = model_path
    widget.tta.value = True
    widget.predict_stack()
    first = widget._worker
    widget.predict_slice()
    assert widget._worker is first and "already running" in widget.status.text()
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)


def test_lazy_layer_is_predicted_block_by_block_into_zarr(widget, model_path, qtbot, tmp_path,
                                                           isbi_small):
    import dask.array as da

    viewer = widget._viewer
    widget.model.value = model_path
    run(qtbot, widget, widget.predict_stack)  # in memory, for reference
    expected = viewer.layers[PROBABILITY].data.copy()
    lazy = viewer.add_image(da.from_array(isbi_small[0], chunks=(1, 64, 64)), name="lazy em")
    widget.reset_choices()
    widget.image_layer.value = lazy
    widget.volume_output.value = tmp_path / "p.zarr"
    run(qtbot, widget, widget.predict_stack)
    prob, unsure, mask = viewer.layers[-3], viewer.layers[-2], viewer.layers[-1]
    assert isinstance(prob.data, da.Array) and isinstance(mask.data, da.Array)
    assert isinstance(unsure.data, da.Array) and not unsure.visible
    np.testing.assert_allclose(np.asarray(unsure.data),
                               uncertainty_map(expected, threshold=0.42), atol=1e-4)
    ranking = slice_ranking(mask)
    np.testing.assert_allclose(ranking.slices, np.asarray(unsure.data).mean(axis=(1, 2)),
                               rtol=1e-4)
    assert (tmp_path / "p.zarr").is_dir()
    np.testing.assert_allclose(np.asarray(prob.data), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask.data), np.where(expected > 0.42, 1, 2))
    assert "block by block" not in widget.status.text() and "p.zarr" in widget.status.text()
    widget.predict_stack()  # the output exists now: refused, nothing replaced
    assert not widget.running and "exists" in widget.errors[-1]
    widget.errors.clear()


def test_first_look_with_the_bundled_model(make_napari_viewer, isbi_small, qtbot):
    from napari_unet.model.files import BUNDLED

    viewer = make_napari_viewer()
    viewer.add_image(isbi_small[0][:, :96, :96], name="em")
    widget = PredictionWidget(viewer)  # no model trained or loaded yet
    assert widget.model.value == BUNDLED["isbi2012"]
    qtbot.waitUntil(lambda: MASK in viewer.layers and not widget.running, timeout=30_000)
    mask, z = viewer.layers[MASK].data, viewer.dims.current_step[0]
    assert mask.shape == (4, 96, 96) and set(np.unique(mask[z])) == {1, 2}  # the slice in view
    assert not np.delete(mask, z, axis=0).any()  # only that slice


def test_own_package_predicts_as_its_model_file(widget, model_path, qtbot, tmp_path):
    pytest.importorskip("bioimageio.core")
    from napari_unet.bioimageio.export import export_package

    package = export_package(model_path, tmp_path / "tiny.zip", check=False)
    widget.cells.value = True
    widget.model.value = model_path
    run(qtbot, widget, widget.predict_stack)
    layers = widget._viewer.layers
    names = (PROBABILITY, MASK, CELLS, UNCERTAINTY)
    expected = {name: layers[name].data.copy() for name in names}
    widget.model.value = package
    assert widget.threshold.value == pytest.approx(0.42) and widget.tile.value == 64
    run(qtbot, widget, widget.predict_stack)
    assert len(layers) == 5  # the same layers, updated in place
    for name, data in expected.items():
        np.testing.assert_array_equal(layers[name].data, data, err_msg=name)


def test_another_tools_package_predicts_into_the_same_layers(widget, qtbot, tmp_path,
                                                              isbi_small):
    pytest.importorskip("bioimageio.core")
    from napari_unet._tests.test_foreign import write_foreign_package
    from napari_unet._widgets.session import session
    from napari_unet.jobs import drain
    from napari_unet.prediction.pipeline import image_job, open_model

    package = write_foreign_package(tmp_path / "foreign")
    widget.model.value = package
    assert not widget.errors, widget.errors
    assert "threshold 0.50" in widget.summary.text()
    assert session(widget._viewer).model != package  # other widgets read napari-unet models only
    widget.tta.value = True
    widget.predict_stack()  # refused in one line, nothing started
    assert not widget.running and "test-time augmentation" in widget.errors[-1]
    widget.errors.clear()
    widget.tta.value = False
    run(qtbot, widget, widget.predict_stack)
    layers = widget._viewer.layers
    expected = drain(image_job(open_model(package), isbi_small[0], threshold=0.5, min_size=None,
                               device="cpu", tile=widget.tile.value))
    np.testing.assert_allclose(layers[PROBABILITY].data, expected.probabilities, atol=1e-6)
    np.testing.assert_array_equal(layers[MASK].data, expected.mask)
