"""The Export widget in a real viewer: TIFF files written and re-read, models saved and loaded."""

import numpy as np
import pytest
import tifffile
from napari.layers import Labels

from napari_unet._widgets import runner
from napari_unet._widgets.export import ExportWidget
from napari_unet._widgets.prediction import CELLS, MARK, MASK, PROBABILITY, PredictionWidget
from napari_unet._widgets.session import session
from napari_unet.io.stacks import read_labels, write_mask
from napari_unet.model.files import load_model


@pytest.fixture
def viewer(make_napari_viewer, isbi_small):
    viewer = make_napari_viewer()
    image = isbi_small[0]
    viewer.add_image(image, name="em")
    prob = (image / 255.0).astype(np.float32)
    viewer.add_image(prob, name=PROBABILITY, metadata={MARK: PROBABILITY})
    viewer.add_labels(np.where(prob > 0.5, 1, 2).astype(np.uint8), name=MASK,
                      metadata={MARK: MASK})
    viewer.add_labels((np.arange(prob.size) // 500).reshape(prob.shape).astype(np.int32),
                      name=CELLS, metadata={MARK: CELLS})
    return viewer


@pytest.fixture
def widget(viewer, tmp_path, monkeypatch):
    errors = []
    monkeypatch.setattr(runner, "show_error", errors.append)
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Export")
    widget.folder.value = tmp_path
    widget.errors = errors
    return widget


def run_export(widget, qtbot):
    widget.export()
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)


def test_exports_the_three_layers_and_reads_them_back(widget, viewer, tmp_path, qtbot):
    assert widget.name.value == "em"
    assert widget.mask.value is viewer.layers[MASK]
    assert widget.probabilities.value is viewer.layers[PROBABILITY]
    assert widget.cells.value is viewer.layers[CELLS]
    run_export(widget, qtbot)
    assert not widget.errors, widget.errors
    mask = tifffile.imread(tmp_path / "em_mask.tif")
    np.testing.assert_array_equal(mask, np.where(viewer.layers[MASK].data == 1, 255, 0))
    np.testing.assert_array_equal(read_labels(tmp_path / "em_mask.tif"), viewer.layers[MASK].data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "em_probabilities.tif"),
                                  viewer.layers[PROBABILITY].data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "em_cells.tif"),
                                  viewer.layers[CELLS].data)
    assert "wrote" in widget.status.text() and widget.progress.value() == 3
    (cells,) = viewer.open(tmp_path / "em_cells.tif", plugin="napari-unet-em")
    assert isinstance(cells, Labels)
    np.testing.assert_array_equal(cells.data, viewer.layers[CELLS].data)


def test_isbi_convention_and_no_silent_overwrite(widget, viewer, tmp_path, qtbot):
    widget.probabilities.value = widget.cells.value = None
    widget.convention.value = "isbi"
    run_export(widget, qtbot)
    path = tmp_path / "em_mask.tif"
    np.testing.assert_array_equal(tifffile.imread(path),
                                  np.where(viewer.layers[MASK].data == 1, 0, 255))
    before = path.read_bytes()
    widget.convention.value = "membrane"
    widget.export()
    assert not widget.running and "em_mask.tif exist" in widget.errors[-1]
    assert path.read_bytes() == before
    widget.overwrite.value = True
    run_export(widget, qtbot)
    assert path.read_bytes() != before


def test_load_and_save_the_model(widget, viewer, model_path, tmp_path):
    assert "none yet" in widget.model_label.text()
    predictor = PredictionWidget(viewer)
    widget.load_path.value = model_path
    widget.load_model()
    assert session(viewer).model == model_path and predictor.model.value == model_path
    assert "depth 3, width 4" in widget.model_label.text()
    widget.save_path.value = tmp_path / "copy.pt"
    widget.save_model()
    copy, original = load_model(tmp_path / "copy.pt"), load_model(model_path)
    assert copy.config == original.config and copy.history == original.history
    assert widget.model_status.text() == f"saved a copy as {tmp_path / 'copy.pt'}"
    widget.save_model()  # the copy exists now
    assert "exists" in widget.errors[-1] and "exists" in widget.model_status.text()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    widget.load_path.value = bad
    widget.load_model()
    assert "not a napari-unet model" in widget.errors[-1] and session(viewer).model == model_path


def test_a_wrong_layer_is_refused_before_any_file_is_written(widget, viewer, tmp_path):
    widget.probabilities.value = viewer.layers["em"]  # uint8 EM, not probabilities
    widget.export()
    assert not widget.running
    assert widget.errors[-1] == ("probabilities (em): probabilities must be floats in [0, 1], "
                                 "got uint8")
    assert not list(tmp_path.glob("*.tif"))


@pytest.mark.parametrize("through", ["same path", "symbolic link"])
def test_export_never_replaces_a_file_a_layer_came_from(widget, viewer, tmp_path, qtbot,
                                                        through):
    source = tmp_path / "em_mask.tif"
    write_mask(source, viewer.layers[MASK].data)
    before = source.read_bytes()
    if through == "symbolic link":  # the export's folder holds a link to the layer's file
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        source = elsewhere / "em_mask.tif"
        source.write_bytes(before)
        (tmp_path / "em_mask.tif").unlink()
        (tmp_path / "em_mask.tif").symlink_to(source)
    (opened,) = viewer.open(source, plugin="napari-unet-em")
    opened.data = np.full_like(opened.data, 2)
    widget.mask.value = opened
    widget.probabilities.value = widget.cells.value = None
    widget.overwrite.value = True
    widget.export()
    assert not widget.running
    assert "an input is never replaced, even when overwriting is allowed" in widget.errors[-1]
    assert f"the file of layer {opened.name!r}" in widget.errors[-1]
    assert source.read_bytes() == before
    widget.name.value = "edited"  # another name is fine
    run_export(widget, qtbot)
    np.testing.assert_array_equal(read_labels(tmp_path / "edited_mask.tif"), opened.data)
    assert source.read_bytes() == before


def run_package(widget, qtbot):
    widget.export_package()
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)


def test_bioimageio_package_of_the_current_model(widget, viewer, model_path, tmp_path, qtbot):
    pytest.importorskip("bioimageio.core")
    import torch

    output = tmp_path / "tiny.zip"
    widget.package_path.value = output
    widget.export_package()  # no current model yet
    assert not widget.running and "no current model" in widget.errors[-1]
    assert not output.exists()
    widget.errors.clear()
    session(viewer).set_model(model_path)
    widget.package_name.value = "tiny test U-Net"
    widget.authors.value = "Jane Doe, John Roe"
    widget.description.value = "A tiny test network."
    widget.license.value = "MIT"
    widget.tags.value = "test, tiny"
    widget.package_check.value = False  # bioimageio.core's test has tests of its own
    run_package(widget, qtbot)
    assert not widget.errors, widget.errors
    assert widget.status.text().startswith(f"wrote the bioimage.io package {output}")
    assert widget.progress.value() == widget.progress.maximum() > 0
    package, original = load_model(output), load_model(model_path)
    assert package.config == original.config and package.threshold == original.threshold
    assert package.state_dict.keys() == original.state_dict.keys()
    for key, value in original.state_dict.items():
        torch.testing.assert_close(package.state_dict[key], value, rtol=0, atol=0)
    before = output.read_bytes()
    widget.export_package()  # the package exists: refused in one line, nothing replaced
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)
    assert "exists; tick 'overwrite'" in widget.errors[-1] and "\n" not in widget.errors[-1]
    assert widget.status.text().startswith("error:") and output.read_bytes() == before
    widget.errors.clear()
    widget.license.value = "MIT"
    widget.package_name.value = "bad/name"
    widget.package_overwrite.value = True
    widget.export_package()
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)
    assert "name 'bad/name'" in widget.errors[-1] and output.read_bytes() == before
