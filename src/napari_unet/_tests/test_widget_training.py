"""The Training widget in a real viewer, with a tiny network on 128x128 crops."""

import gc
import shutil
import time

import napari
import numpy as np
import pytest

from napari_unet._widgets.progress import describe_validation
from napari_unet._widgets.training import VALIDATION_PREVIEW as PREVIEW
from napari_unet._widgets.training import TrainingWidget
from napari_unet._widgets.training_form import config_from_form
from napari_unet.config import Config, parse_slices
from napari_unet.errors import InputError
from napari_unet.io.stacks import write_tiff
from napari_unet.model.files import BUNDLED
from napari_unet.training.progress import Event
from napari_unet.training.train import last_path_for

TINY = {"depth": 3, "base_channels": 4, "tile": 64, "batch_size": 2, "epochs": 2,
        "val_slices": "3", "device": "cpu", "lr": "0.01"}


@pytest.fixture
def widget(make_napari_viewer, isbi_small, tmp_path, qtbot):
    viewer = make_napari_viewer()
    image, labels = isbi_small
    viewer.add_image(image, name="em")
    viewer.add_labels(labels, name="labels")
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    for name, value in TINY.items():
        getattr(widget.form, name).value = value
    widget.form.output.value = tmp_path / "model.pt"
    yield widget
    worker = widget._worker
    if worker is not None:  # a test left it running, or closed the viewer under it
        worker.quit()
        qtbot.waitUntil(lambda: not worker.is_running, timeout=10_000)


def wait_until_done(qtbot, widget, timeout=30_000):
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_training_runs_plots_previews_and_saves(widget, qtbot, tmp_path):
    widget.start()
    assert widget.running and not widget.start_button.isEnabled()
    wait_until_done(qtbot, widget)
    assert widget.status.text().startswith("finished (epochs)"), widget.status.text()
    assert widget.progress.value() == widget.progress.maximum() > 0
    xs, ys = (widget.loss_plot.series["train loss"].xs, widget.loss_plot.series["train loss"].ys)
    assert len(xs) == widget.progress.maximum() and np.all(np.isfinite(ys))
    assert len(widget.loss_plot.series["val loss"].xs) == 2
    v_rand = widget.loss_plot.series["V_rand"].ys
    assert len(v_rand) == 2 and all(0 <= v <= 1 for v in v_rand)
    qtbot.waitUntil(lambda: not widget._turns.pending)  # the preview comes in a few turns
    preview = widget._viewer.layers[PREVIEW]
    assert preview.data.shape == (1, 128, 128)
    assert tuple(preview.translate) == (3, 0, 0)  # on validation slice 3
    assert 0 <= preview.data.min() and preview.data.max() <= 1
    assert (tmp_path / "model.pt").is_file() and last_path_for(tmp_path / "model.pt").is_file()
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    # The preview layer is not offered as training data.
    assert preview not in widget.form.image_layer.choices


def test_stop_ends_within_a_second_and_saves_the_last_model(widget, qtbot, tmp_path):
    widget.form.epochs.value = 500
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value() >= 3, timeout=20_000)
    tic = time.monotonic()
    widget.stop()
    assert "stopping" in widget.status.text()
    wait_until_done(qtbot, widget, timeout=5_000)
    assert time.monotonic() - tic < 1.0
    assert widget.status.text().startswith("stopped: the last model is in")
    assert last_path_for(tmp_path / "model.pt").is_file()
    assert widget.progress.value() < widget.progress.maximum()


def test_starting_twice_is_refused(widget, qtbot):
    widget.form.epochs.value = 500
    widget.start()
    first = widget._worker
    widget.start()
    assert widget._worker is first
    assert "already running" in widget.status.text()
    widget.find_lr()
    assert widget._worker is first


def test_the_collector_skips_the_viewers_objects_only_while_a_job_runs(widget, qtbot):
    # A full collection walking all of them froze the GUI for ~300 ms during training.
    widget.form.epochs.value = 500
    widget.start()
    assert gc.get_freeze_count() > 0
    widget.stop()
    qtbot.waitUntil(lambda: not widget.running and gc.get_freeze_count() == 0, timeout=5_000)


def test_existing_output_needs_overwrite(widget, qtbot, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"precious")
    widget.start()
    assert not widget.running
    assert "exists; tick 'overwrite'" in widget.status.text()
    assert (tmp_path / "model.pt").read_bytes() == b"precious"


@pytest.fixture
def opened(widget, isbi_small, tmp_path):
    """The image and labels opened from TIFF files in tmp_path (so with a source path), chosen."""
    layers = {}
    for name, data in zip(("em_image", "em_labels"), isbi_small, strict=True):
        write_tiff(tmp_path / f"{name}.tif", data)
        (layers[name],) = widget._viewer.open(tmp_path / f"{name}.tif", plugin="napari-unet-em")
    assert isinstance(layers["em_labels"], napari.layers.Labels)
    widget.form.image_layer.value = layers["em_image"]
    widget.form.labels_layer.value = layers["em_labels"]
    return layers


def files_in(folder):
    """Every file under a folder, links followed, with its bytes."""
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", ["image file", "labels file (linked) as the last model",
                                  "initial model", "initial model as the last model",
                                  "bundled model"])
def test_the_output_never_replaces_an_input(widget, opened, model_path, tmp_path, case):
    form, bundled = widget.form, BUNDLED["isbi2012"]
    form.overwrite.value = True  # never enough to replace an input
    if case.startswith("initial model"):
        form.start_from.value, form.init.value = "init", model_path
    if case == "labels file (linked) as the last model":
        (tmp_path / "m.last.tif").symlink_to(tmp_path / "em_labels.tif")
    if case == "initial model as the last model":
        form.init.value = shutil.copy(model_path, tmp_path / "run.last.pt")
    output, message = {
        "image file": (tmp_path / "em_image.tif",
                       f"save model to: {tmp_path / 'em_image.tif'} is the file of image "
                       "layer 'em_image': an input is never replaced"),
        "labels file (linked) as the last model": (
            tmp_path / "m.tif", f"save model to: its last model {tmp_path / 'm.last.tif'} is "
            f"the file of labels layer 'em_labels' {tmp_path / 'em_labels.tif'}: an input"),
        "initial model": (model_path, f"save model to: {model_path} is the initial model: an "
                          "input is never replaced, even when overwriting is allowed"),
        "initial model as the last model": (
            tmp_path / "run.pt", f"save model to: its last model {tmp_path / 'run.last.pt'} is "
            "the initial model: an input"),
        "bundled model": (bundled, f"save model to: {bundled} is a model installed with "
                          "napari-unet; choose another name"),
    }[case]
    before, bundled_before = files_in(tmp_path), bundled.read_bytes()
    form.output.value = output
    widget.start()
    assert not widget.running
    assert widget.status.text().startswith(f"error: {message}"), widget.status.text()
    assert "\n" not in widget.status.text()
    assert files_in(tmp_path) == before and bundled.read_bytes() == bundled_before
    form.output.value = tmp_path / "fresh.pt"  # the same inputs with another output are fine
    assert form.read_paths()[0] == tmp_path / "fresh.pt"


def test_an_earlier_runs_last_model_needs_overwrite_or_resume(widget, tmp_path):
    last = last_path_for(tmp_path / "model.pt")
    last.write_bytes(b"earlier run")
    widget.start()
    assert not widget.running
    assert widget.status.text() == (f"error: {last} exists; tick 'overwrite', choose another "
                                    "file, or resume it")
    assert last.read_bytes() == b"earlier run" and not (tmp_path / "model.pt").exists()
    widget.form.start_from.value = "resume"
    assert widget.form.read_paths() == (tmp_path / "model.pt", None, last)
    widget.form.start_from.value, widget.form.overwrite.value = "scratch", True
    assert widget.form.read_paths() == (tmp_path / "model.pt", None, None)


def test_the_time_budget_closes_with_a_final_validation(widget, qtbot):
    widget.form.epochs.value = 10_000
    widget.form.minutes.value = 0.01  # 0.6 s, then one more validation
    widget.start()
    shown = []  # what the status says after each validation (connected after the widget)
    widget._worker.yielded.connect(
        lambda p: shown.append((p.step, widget.status.text()))
        if p.event is Event.VALIDATION else None)
    wait_until_done(qtbot, widget)
    assert widget.status.text().startswith("finished (time budget)"), widget.status.text()
    *epochs, (step, final) = shown
    assert final.startswith(f"final validation (time budget, step {step}): val loss "), final
    assert [text.split(":")[0] for _, text in epochs] == [
        f"epoch {n}" for n in range(1, len(epochs) + 1)]  # each epoch once, none repeated


def test_describe_validation():
    record = {"epoch": 3, "step": 40, "train_loss": 0.5, "val_loss": 0.25, "v_rand": 0.875}
    assert describe_validation(record) == "epoch 3: val loss 0.250, V_rand 0.875"
    assert describe_validation(record, final=True) == (
        "final validation (time budget, step 40): val loss 0.250, V_rand 0.875")
    assert describe_validation({"epoch": 1, "step": 5, "train_loss": 0.5}) == (
        "epoch 1: train loss 0.500")


@pytest.mark.parametrize("close", ["widget", "viewer"])
def test_closing_stops_training_and_saves(widget, qtbot, tmp_path, close):
    widget.form.epochs.value = 500
    widget.start()
    worker = widget._worker
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=20_000)
    if close == "widget":
        widget._viewer.window.remove_dock_widget(widget)
    else:
        widget._viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    assert last_path_for(tmp_path / "model.pt").is_file()


def test_training_error_is_reported_and_ends_the_run(widget, qtbot, tmp_path):
    widget.form.lr.value = "1e9"
    widget.start()
    wait_until_done(qtbot, widget)
    assert widget.status.text().startswith("error: loss became"), widget.status.text()
    assert widget.start_button.isEnabled()


def test_lr_finder_plots_and_suggests(widget, qtbot):
    widget.lr_steps = 40
    widget.find_lr()
    wait_until_done(qtbot, widget)
    lrs = widget.lr_plot.series["smoothed"].xs
    assert len(lrs) >= 10 and lrs == sorted(lrs)
    assert widget.suggestion is not None and lrs[0] <= widget.suggestion <= lrs[-1]
    assert widget.lr_plot.marker[0] == widget.suggestion
    assert widget.use_lr_button.isEnabled()
    widget.use_lr_button.click()
    assert float(widget.form.lr.value) == pytest.approx(widget.suggestion, rel=1e-2)


def test_bad_input_starts_nothing(widget):
    viewer, form = widget._viewer, widget.form
    labels = form.labels_layer.value
    viewer.add_labels(np.ones((5, 5), np.uint8), name="small")
    viewer.add_labels(np.zeros_like(labels.data), name="empty")
    cases = [
        (form.labels_layer, None, "choose a labels layer"),
        (form.labels_layer, viewer.layers["small"], "labels shape (5, 5) differs"),
        (form.labels_layer, viewer.layers["empty"], "the labels hold no annotation"),
        (form.lr, "fast", "learning rate: not a number"),
        (form.val_slices, "9", "validation slices [9] are outside"),
    ]
    for field, value, message in cases:
        good, field.value = field.value, value
        widget.start()
        assert not widget.running, message
        assert message in widget.status.text()
        field.value = good
    assert PREVIEW not in viewer.layers


def test_config_from_form():
    values = {"depth": 3, "base_channels": 4, "padding": "same", "tile": 64, "batch_size": 2,
              "optimizer": "adam", "lr": "1e-3", "epochs": 7, "minutes": 0,
              "val_slices": "5, 15,25", "device": "cpu"}
    expected = Config().replace(
        model={"depth": 3, "base_channels": 4, "padding": "same"},
        train={"tile": 64, "batch_size": 2, "optimizer": "adam", "lr": 0.001, "epochs": 7,
               "minutes": None, "val_slices": (5, 15, 25), "device": "cpu"})
    assert config_from_form(values) == expected
    base = Config().replace(weights={"w0": 5.0})
    assert config_from_form({"minutes": 2.5, "val_slices": ""}, base=base) == base.replace(
        train={"minutes": 2.5, "val_slices": None})
    assert parse_slices(" ") is None
    with pytest.raises(InputError, match="validation slices"):
        parse_slices("1,a")
    with pytest.raises(InputError, match="tile must be at least 1"):
        config_from_form({"tile": 0})


def test_form_starts_from_the_auto_preset(make_napari_viewer):
    from napari_unet.config import config_for_preset

    widget = TrainingWidget(make_napari_viewer())
    assert widget.form.preset.value == "auto" and widget.form.preset.choices[0] == "auto"
    assert widget.form.config() == config_for_preset("auto")  # on this machine: cpu
    assert widget.form.device.choices[0] == "auto"
    assert str(widget.form.output.value).endswith("model.pt")


def test_presets_fill_the_form_and_the_previews_follow(widget):
    from napari_unet._widgets.session import session
    from napari_unet._widgets.weights_preview import WeightsPreview

    viewer = widget._viewer
    weights = WeightsPreview(viewer)
    widget.form.preset.value = "paper"
    config = widget.form.config(base=session(viewer).training_base())
    assert (config.model.base_channels, config.model.padding, config.train.tile,
            config.train.optimizer, config.model.batch_norm) == (64, "valid", 388, "sgd", False)
    assert config.augment.elastic_p == 1.0 and config.train.epochs == 2  # epochs: the form's
    weights.w0.value = 4.0  # tuned in the preview: training takes it
    assert widget.form.config(base=session(viewer).training_base()).weights.w0 == 4.0
    widget.form.preset.value = "cpu"
    config = widget.form.config(base=session(viewer).training_base())
    assert (config.model.base_channels, config.model.padding, config.model.batch_norm,
            config.train.tile, config.train.batch_size) == (16, "same", True, 192, 4)
    assert config.augment.elastic_p == 0.0 and config.train.threshold == 0.6
    assert config.train.close_gaps == 0.2
    assert (config.weights.w0, config.weights.balance, config.weights.membrane_weight) == (
        0.0, False, 2.0)
    # the preview shows the preset's weight map
    assert (weights.w0.value, weights.balance.value, weights.membrane_weight.value) == (
        0.0, False, 2.0)
    widget.form.depth.value = 3  # a field overrides the preset
    assert widget.form.config().model.depth == 3


def test_start_from_the_bundled_model(widget):
    from napari_unet.model.files import BUNDLED, load_model

    assert "bundled" in widget.form.start_from.choices  # offered: the file is installed
    widget.form.start_from.value = "bundled"
    _, init, resume = widget.form.read_paths()
    assert init == BUNDLED["isbi2012"] and resume is None
    assert load_model(init).config.model.base_channels == 16  # a real model to start from


def test_the_validation_preview_comes_in_steps_and_leaves_the_selection(widget, qtbot):
    # Added in one go, the preview layer held napari's event loop 130-230 ms (issue 15).
    from napari_unet._widgets.training import Run

    viewer = widget._viewer
    labels = viewer.layers["labels"]
    viewer.layers.selection.active = labels  # the user paints, say
    widget._run = Run(preview_slice=3, ndim=3, scale=np.array([2.0, 1.0, 1.0]),
                      translate=np.array([10.0, 0.0, 0.0]))
    widget._show_preview(np.full((128, 128), 0.25, np.float32))
    assert PREVIEW not in viewer.layers  # not yet: one step a turn of the event loop
    widget._show_preview(np.full((128, 128), 0.5, np.float32))  # a later record meanwhile
    qtbot.waitUntil(lambda: not widget._turns.pending, timeout=5_000)
    preview = viewer.layers[PREVIEW]
    assert [layer.name for layer in viewer.layers].count(PREVIEW) == 1
    assert preview.data.shape == (1, 128, 128) and np.all(preview.data == 0.5)
    assert tuple(preview.translate) == (16, 0, 0)  # slice 3 of the scaled stack
    assert viewer.dims.point[0] == 16  # the view went to it
    assert viewer.layers.selection.active is labels and preview not in viewer.layers.selection
    # its controls were made ahead, once, and show when it is chosen
    controls = viewer.window._qt_viewer.controls
    assert set(controls.widgets) == set(viewer.layers)
    viewer.layers.selection.active = preview
    assert controls.currentWidget() is controls.widgets[preview]
    canvas = viewer.window._qt_viewer.canvas
    assert canvas.layer_to_visual[preview].layer is preview
    viewer.layers.remove(preview)
    assert preview not in controls.widgets and preview not in canvas.layer_to_visual


def test_text_appearing_does_not_grow_the_widget(widget):
    # An empty label is shorter than one with text: at Start and at the first step the
    # window grew by that, and napari drew the resized canvas again (80-95 ms, issue 15).
    before = widget.minimumSizeHint().height()
    widget.status.setText("training on 3 slices (0-2), validating on 3; device cpu")
    widget.progress_label.setText("epoch 1/2 · step 1/4 · 2.0 tiles/s · 3 s left")
    assert widget.minimumSizeHint().height() == before
    widget.progress_label.setText("")
    assert widget.minimumSizeHint().height() == before
