"""Correct and retrain, in a real viewer: painted slices are tracked, Retrain fine-tunes."""

import numpy as np
import pytest

from napari_unet._widgets import correct, prediction, runner
from napari_unet._widgets.correct import CorrectWidget, retrained_path
from napari_unet._widgets.layers import camera
from napari_unet._widgets.prediction import MASK, PredictionWidget
from napari_unet._widgets.session import CORRECTED, session, slice_ranking
from napari_unet.model.files import load_model
from napari_unet.training.train import last_path_for


@pytest.fixture
def viewer(make_napari_viewer, isbi_small):
    viewer = make_napari_viewer()
    image, labels = isbi_small
    viewer.add_image(image, name="em")
    original = np.zeros_like(labels)
    original[3] = labels[3]  # one slice annotated at first
    viewer.add_labels(original, name="labels")
    predicted = np.where(image > image.mean(), 2, 1).astype(np.uint8)
    viewer.add_labels(predicted, name=MASK, metadata={prediction.MARK: MASK})
    return viewer


@pytest.fixture
def widget(viewer, qtbot, monkeypatch):
    errors = []
    monkeypatch.setattr(runner, "show_error", errors.append)
    widget = CorrectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Correct and retrain")
    widget.device.value = "cpu"
    widget.minutes.value = 0
    widget.epochs.value = 1
    widget.errors = errors
    yield widget
    worker = widget._worker
    if worker is not None:
        worker.quit()
        qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def listed(widget):
    return [widget.slices.item(i).text() for i in range(widget.slices.count())]


def test_picks_the_predicted_mask_and_the_original_labels(widget, viewer):
    assert widget.mask_layer.value is viewer.layers[MASK]
    assert widget.original.value is viewer.layers["labels"]
    assert widget.image_layer.value is viewer.layers["em"]
    assert widget.summary.text() == ("Retrain trains on 1 slice(s): 0 corrected, 1 from the "
                                     "original labels; no validation (fewer than 3 original "
                                     "slices besides the corrected ones).")


def test_painting_marks_slices_and_the_list_edits_them(widget, viewer):
    mask = viewer.layers[MASK]
    mask.brush_size = 5
    viewer.dims.set_current_step(0, 2)
    mask.paint((2, 40, 40), 1)
    mask.fill((0, 10, 10), 0)
    assert listed(widget) == ["slice 0", "slice 2"]
    assert mask.metadata[CORRECTED] == [0, 2]
    assert "3 slice(s): 2 corrected, 1 from the original" in widget.summary.text()
    widget.slices.item(0).setSelected(True)
    widget.remove_selected()
    assert listed(widget) == ["slice 2"]
    viewer.dims.set_current_step(0, 1)
    widget.add_current_slice()
    assert mask.metadata[CORRECTED] == [1, 2] and listed(widget) == ["slice 1", "slice 2"]


def test_prediction_keeps_corrected_slices(widget, viewer, model_path, qtbot):
    mask = viewer.layers[MASK]
    mask.paint((1, 64, 64), 0)
    before = mask.data[1].copy()
    predictor = PredictionWidget(viewer)
    predictor.device.value = "cpu"
    predictor.model.value = model_path
    predictor.predict_stack()
    qtbot.waitUntil(lambda: not predictor.running, timeout=20_000)
    assert viewer.layers[MASK] is mask
    np.testing.assert_array_equal(mask.data[1], before)
    assert mask.data[1, 64, 64] == 0 and mask.data[[0, 2, 3]].min() > 0
    assert "kept the corrected mask of slice(s) 1" in predictor.status.text()
    viewer.dims.set_current_step(0, 1)
    predictor.predict_slice()
    qtbot.waitUntil(lambda: not predictor.running, timeout=20_000)
    np.testing.assert_array_equal(mask.data[1], before)


def test_retrain_fine_tunes_and_becomes_the_current_model(widget, viewer, model_path, qtbot):
    follower = PredictionWidget(viewer)
    widget.model.value = model_path
    assert widget.output.value == model_path.with_name("m-retrained.pt")
    viewer.layers[MASK].paint((1, 64, 64), 1)
    widget.retrain()
    assert widget.running and not widget.retrain_button.isEnabled()
    widget.retrain()  # a second start is refused politely
    assert "already running" in widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert not widget.errors, widget.errors
    out = model_path.with_name("m-retrained.pt")
    assert out.is_file() and last_path_for(out).is_file()
    assert session(viewer).model == out
    assert widget.model.value == out and follower.model.value == out
    assert widget.output.value == model_path.with_name("m-retrained-2.pt")
    assert widget.plot.series["train loss"].xs
    retrained, start = load_model(out), load_model(model_path)
    assert retrained.config.model == start.config.model
    assert any(not np.array_equal(retrained.state_dict[k], start.state_dict[k])
               for k in start.state_dict)


def test_retrain_without_corrections_or_model_explains(widget, viewer, model_path):
    widget.original.value = None
    widget.model.value = model_path
    widget.retrain()
    assert not widget.running and "nothing to train on" in widget.errors[-1]
    widget.set_corrected([2])
    widget.model.value = None
    widget.retrain()
    assert not widget.running and "choose an existing model" in widget.errors[-1]


def test_retrained_path_never_names_an_existing_file(tmp_path):
    model = tmp_path / "m.pt"
    assert retrained_path(model).name == "m-retrained.pt"
    (tmp_path / "m-retrained.pt").touch()
    assert retrained_path(model).name == "m-retrained-2.pt"
    last_path_for(tmp_path / "m-retrained-2.pt").touch()
    assert retrained_path(tmp_path / "m-retrained.pt").name == "m-retrained-3.pt"


@pytest.mark.parametrize("how", ["stop", "close widget"])
def test_stop_or_close_keeps_the_last_model(widget, viewer, model_path, qtbot, how):
    widget.model.value = model_path
    widget.epochs.value = 500
    widget.set_corrected([1])
    widget.retrain()
    worker = widget._worker
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=30_000)
    if how == "stop":
        widget.stop()
        qtbot.waitUntil(lambda: not widget.running, timeout=1_000)  # within a second
        assert widget.status.text().startswith("stopped: the last model is in")
    else:
        viewer.window.remove_dock_widget(widget)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    last = last_path_for(model_path.with_name("m-retrained.pt"))
    assert last.is_file() and load_model(last).training_state["step"] >= 2


def test_validation_never_takes_a_corrected_slice(widget, viewer, isbi_small):
    viewer.layers["labels"].data = isbi_small[1]  # all four slices annotated
    widget.set_corrected([1])
    assert widget.validation_slices() == [2]
    assert widget.summary.text().endswith("validates on original slice(s) 2.")
    assert "trains on 3 slice(s): 1 corrected, 2 from the original" in widget.summary.text()
    widget.set_corrected([1, 2])
    assert widget.validation_slices() == []


def test_bundled_model_retrains_into_the_users_folder(widget, tmp_path, monkeypatch):
    from napari_unet.model.files import BUNDLED

    monkeypatch.setattr(correct, "USER_MODELS", tmp_path / "models")
    widget.bundled_button.click()
    assert widget.model.value == BUNDLED["isbi2012"]
    assert widget.output.value == tmp_path / "models" / "isbi2012-retrained.pt"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "isbi2012-retrained.pt").touch()
    assert retrained_path(BUNDLED["isbi2012"]).name == "isbi2012-retrained-2.pt"


def next_listed(widget):
    return [widget.next_list.item(i).text() for i in range(widget.next_list.count())]


def in_view(viewer):
    return viewer.dims.current_step[0]


def predict_stack(viewer, model_path, qtbot, **settings):
    predictor = PredictionWidget(viewer)
    predictor.device.value = "cpu"
    predictor.model.value = model_path
    for name, value in settings.items():
        getattr(predictor, name).value = value
    predictor.predict_stack()
    qtbot.waitUntil(lambda: not predictor.running, timeout=20_000)
    assert not predictor.status.text().startswith("error"), predictor.status.text()
    return predictor


def test_correct_next_ranks_the_slices_jumps_and_marks_them_done(widget, viewer, model_path,
                                                                 qtbot):
    assert next_listed(widget) == []
    widget.go_next()
    assert "predict the stack first" in widget.errors[-1]
    predict_stack(viewer, model_path, qtbot)
    mask = viewer.layers[MASK]
    ranking = slice_ranking(mask)
    order = ranking.order()
    assert sorted(order) == [0, 1, 2, 3]
    assert next_listed(widget) == [f"{i}. slice {z}   {ranking.slices[z]:.3f}"
                                   for i, z in enumerate(order, start=1)]
    # Next: the least sure slice, centred on its least sure square
    viewer.dims.set_current_step(0, order[-1])
    camera(viewer).center = (0, 0, 0)
    widget.go_next()
    assert in_view(viewer) == order[0]
    np.testing.assert_allclose(camera(viewer).center[-2:], ranking.hotspot(order[0]))
    assert f"slice {order[0]}:" in widget.status.text()
    # painting it marks it done; Next moves on, and on again when a slice is skipped
    mask.paint((order[0], 10, 10), 3 - int(mask.data[order[0], 10, 10]))  # 1 <-> 2
    assert next_listed(widget)[0].endswith("✓ corrected")
    assert widget.corrected == [order[0]]
    widget.go_next()
    assert in_view(viewer) == order[1]
    widget.go_next()  # order[1] left as it is: skipped
    assert in_view(viewer) == order[2]
    widget.set_corrected(order)
    widget.go_next()
    assert "every ranked slice is marked as corrected" in widget.errors[-1]
    assert in_view(viewer) == order[2]


def test_the_list_fills_when_prediction_makes_the_mask(widget, viewer, model_path, qtbot):
    viewer.layers.remove(MASK)  # the widget is open before there is any mask
    widget.reset_choices()
    assert widget.mask_layer.value is None and next_listed(widget) == []
    predict_stack(viewer, model_path, qtbot)
    assert widget.mask_layer.value is viewer.layers[MASK]
    assert len(next_listed(widget)) == 4


def test_a_stack_of_another_shape_gets_its_own_ranking(widget, viewer, model_path, qtbot,
                                                        isbi_small):
    predict_stack(viewer, model_path, qtbot)
    first = slice_ranking(viewer.layers[MASK])
    other = viewer.add_image(isbi_small[0][:3, :96, :112], name="other em")
    predictor = predict_stack(viewer, model_path, qtbot, image_layer=other)
    assert slice_ranking(viewer.layers[MASK]) is first  # the first stack's, untouched
    new_mask = next(layer for layer in viewer.layers
                    if layer.name.startswith(MASK) and layer.data.shape == (3, 96, 112))
    assert sorted(slice_ranking(new_mask).order()) == [0, 1, 2]
    assert predictor.status.text().startswith("predicted the stack of other em")


def test_double_click_jumps_to_a_slice(widget, viewer, model_path, qtbot):
    predict_stack(viewer, model_path, qtbot)
    item = widget.next_list.item(3)
    widget.next_list.itemDoubleClicked.emit(item)
    assert in_view(viewer) == slice_ranking(viewer.layers[MASK]).order()[3]


def test_correct_next_works_on_a_stack_predicted_block_by_block(widget, viewer, model_path,
                                                                qtbot, isbi_small, tmp_path):
    import dask.array as da

    viewer.layers.remove(MASK)
    lazy = viewer.add_image(da.from_array(isbi_small[0], chunks=(1, 64, 64)), name="lazy em")
    predictor = PredictionWidget(viewer)
    predictor.reset_choices()
    predictor.image_layer.value = lazy
    predictor.volume_output.value = tmp_path / "p.zarr"
    predictor.device.value = "cpu"
    predictor.model.value = model_path
    predictor.predict_stack()
    qtbot.waitUntil(lambda: not predictor.running, timeout=20_000)
    widget.reset_choices()
    mask = viewer.layers[-1]
    assert isinstance(mask.data, da.Array)
    widget.mask_layer.value = mask
    order = slice_ranking(mask).order()
    assert len(next_listed(widget)) == 4 and next_listed(widget)[0].startswith(
        f"1. slice {order[0]} ")
    widget.go_next()
    assert in_view(viewer) == order[0]
