"""The napari layer: sample, reader, writer and the Data widget in a real viewer."""

import os

import numpy as np
import pytest
import tifffile
from napari.layers import Image, Labels

from napari_unet._widgets import DataWidget

PLUGIN = "napari-unet-em"


def test_open_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "isbi2012")
    image, labels = viewer.layers
    assert isinstance(image, Image) and isinstance(labels, Labels)
    assert image.data.shape == labels.data.shape == (30, 512, 512)
    assert set(np.unique(labels.data[0])) == {1, 2}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (np.array([[0, 255], [255, 0]], np.uint8), [[1, 2], [2, 1]]),  # ISBI convention
        (np.array([[0, 1], [2, 0]], np.uint8), [[0, 1], [2, 0]]),  # annotation convention
    ],
)
def test_reader_opens_label_files_as_annotation(make_napari_viewer, tmp_path, stored, expected):
    tifffile.imwrite(tmp_path / "labels.tif", np.stack([stored, stored]))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "labels.tif", plugin=PLUGIN)
    assert isinstance(layer, Labels)
    np.testing.assert_array_equal(layer.data[1], expected)


def test_reader_opens_em_images_as_images(make_napari_viewer, tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (2, 16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "em.tif", image)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(tmp_path / "em.tif", plugin=PLUGIN)
    assert isinstance(layer, Image)
    np.testing.assert_array_equal(layer.data, image)


def test_writer_round_trip_and_no_overwrite(make_napari_viewer, tmp_path):
    labels = np.array([[[1, 2, 0], [2, 1, 1]]], np.uint8)
    viewer = make_napari_viewer()
    viewer.add_labels(labels, name="mask")
    path = tmp_path / "mask.tif"
    assert viewer.layers.save(str(path), plugin=PLUGIN) == [str(path)]
    written = tifffile.imread(path)
    assert written.shape == labels.shape and written.dtype == np.uint8
    np.testing.assert_array_equal(written, [[[255, 0, 0], [0, 255, 255]]])
    before = path.read_bytes()
    viewer.layers["mask"].data = np.full_like(labels, 1)
    with pytest.raises(OSError, match="exists; choose another name"):
        viewer.layers.save(str(path), plugin=PLUGIN)
    assert path.read_bytes() == before
    # Re-opened through the reader, the mask is the same annotation again.
    (reopened,) = viewer.open(path, plugin=PLUGIN)
    np.testing.assert_array_equal(reopened.data, np.where(labels == 1, 1, 2))


@pytest.mark.parametrize("through", ["same path", "symbolic link", "hard link"])
def test_writers_never_replace_the_file_a_layer_came_from(make_napari_viewer, tmp_path,
                                                          through):
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, np.array([[[0, 255], [255, 0]]], np.uint8))
    before = path.read_bytes()
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin=PLUGIN)
    layer.data = np.full_like(layer.data, 1)  # painted over, then saved "in place"
    target = {"same path": path, "symbolic link": tmp_path / "link.tif",
              "hard link": tmp_path / "hard.tif"}[through]
    if through == "symbolic link":
        target.symlink_to(path)
    elif through == "hard link":
        os.link(path, target)
    with pytest.raises(OSError, match="exists; choose another name"):
        viewer.layers.save(str(target), plugin=PLUGIN)
    assert path.read_bytes() == before and target.read_bytes() == before


def test_probabilities_and_cells_save_through_the_writers(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    prob = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    viewer.add_image(prob, name="p")
    viewer.add_labels(np.arange(12, dtype=np.int32).reshape(3, 4), name="cells")
    viewer.layers.selection = {viewer.layers["p"]}
    assert viewer.layers.save(str(tmp_path / "p.tif"), selected=True, plugin=PLUGIN)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), prob)
    viewer.layers.selection = {viewer.layers["cells"]}
    assert viewer.layers.save(str(tmp_path / "c.tif"), selected=True, plugin=PLUGIN)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), np.arange(12).reshape(3, 4))


def test_data_widget_reports_the_pair(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "isbi2012")
    widget = DataWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.image_layer.value is viewer.layers["ISBI 2012 EM"]
    assert widget.labels_layer.value is viewer.layers["ISBI 2012 labels"]
    assert widget.status.value.endswith("30/30 slices annotated")
    viewer.add_labels(np.zeros((5, 5), np.uint8), name="small")
    widget.labels_layer.value = viewer.layers["small"]
    assert widget.status.value.startswith("problem: labels shape (5, 5) differs")


def test_data_widget_without_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = DataWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert "open an EM image" in widget.status.value
    viewer.add_image(np.zeros((8, 8), np.float32), name="em")
    widget.reset_choices()
    assert widget.status.value.endswith("no labels")
