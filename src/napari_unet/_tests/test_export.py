"""Retraining labels, export files and the napari writers, on real TIFF files."""

import numpy as np
import pytest
import tifffile

from napari_unet._writer import PREDICTED, write_labels, write_probabilities
from napari_unet.errors import InputError
from napari_unet.io.labels import retraining_labels
from napari_unet.io.stacks import export_paths, read_labels, write_export


def stacks():
    mask = np.full((4, 8, 8), 2, np.uint8)
    mask[:, :, 3] = 1
    original = np.zeros((4, 8, 8), np.uint8)
    original[0] = 2  # slice 0 annotated: interior with a membrane row
    original[0, 0] = 1
    return mask, original


def test_retraining_labels_keep_original_and_take_corrections():
    mask, original = stacks()
    mask[2, 5, 5] = 0  # erased: not annotated
    labels = retraining_labels(mask, [2, 0], original)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[2], mask[2])  # corrected
    np.testing.assert_array_equal(labels[0], mask[0])  # corrected beats the original
    assert not labels[[1, 3]].any()  # neither: ignored by the loss
    labels = retraining_labels(mask, [2], original)
    np.testing.assert_array_equal(labels[0], original[0])
    assert mask[0, 0, 0] == 2 and original[0, 0, 0] == 1  # inputs untouched


def test_retraining_labels_read_an_isbi_original():
    mask, _ = stacks()
    isbi = np.where(mask == 1, 0, 255).astype(np.uint8)
    isbi[:, 0, 0] = 0
    labels = retraining_labels(mask, [], isbi)
    np.testing.assert_array_equal(labels, np.where(isbi == 0, 1, 2))


def test_retraining_labels_2d_and_without_original():
    mask = stacks()[0][0]
    np.testing.assert_array_equal(retraining_labels(mask, [0]), mask)


@pytest.mark.parametrize("corrected, original, match", [
    ([], None, "nothing to train on"),
    ([4], None, r"corrected slices \[4\] are outside"),
    ([1], np.zeros((4, 8, 9), np.uint8), "do not match"),
])
def test_retraining_labels_refuse_bad_input(corrected, original, match):
    with pytest.raises(InputError, match=match):
        retraining_labels(stacks()[0], corrected, original)


def test_retraining_labels_refuse_foreign_values():
    mask = stacks()[0]
    mask[1, 0, 0] = 7
    with pytest.raises(InputError, match="values other than 0"):
        retraining_labels(mask, [1])


def test_export_writes_three_files_and_refuses_to_replace(tmp_path):
    mask, _ = stacks()
    prob = np.where(mask == 1, 0.9, 0.1).astype(np.float64)
    cells = np.arange(4 * 64).reshape(4, 8, 8) % 300
    paths = export_paths(tmp_path, "em", ["mask", "cells", "probabilities"])
    assert [p.name for p in paths.values()] == ["em_mask.tif", "em_probabilities.tif",
                                                "em_cells.tif"]
    for kind, data in (("mask", mask), ("probabilities", prob), ("cells", cells)):
        write_export(kind, paths[kind], data, convention="isbi")
    np.testing.assert_array_equal(tifffile.imread(paths["mask"]), np.where(mask == 1, 0, 255))
    np.testing.assert_array_equal(read_labels(paths["mask"]), mask)  # convention recorded
    written = tifffile.imread(paths["probabilities"])
    assert written.dtype == np.float32 and np.allclose(written, prob)
    written = tifffile.imread(paths["cells"])
    assert written.dtype == np.uint8  # the smallest dtype that holds labels up to 255
    np.testing.assert_array_equal(written, cells)
    before = paths["mask"].read_bytes()
    with pytest.raises(InputError, match=r"em_mask\.tif exist"):
        export_paths(tmp_path, "em", ["mask"])
    with pytest.raises(InputError, match="exists"):
        write_export("mask", paths["mask"], mask)
    assert paths["mask"].read_bytes() == before
    assert export_paths(tmp_path, "em", ["mask"], overwrite=True)["mask"] == paths["mask"]


@pytest.mark.parametrize("folder, name, kinds, match", [
    ("missing", "em", ["mask"], "no such folder"),
    (".", "", ["mask"], "plain name"),
    (".", "a/b", ["mask"], "plain name"),
    (".", "em", [], "nothing to export"),
    (".", "em", ["weights"], "unknown export"),
])
def test_export_paths_refuse_bad_requests(tmp_path, folder, name, kinds, match):
    with pytest.raises(InputError, match=match):
        export_paths(tmp_path / folder, name, kinds)


def test_write_export_refuses_wrong_data(tmp_path):
    with pytest.raises(InputError, match="floats"):
        write_export("probabilities", tmp_path / "p.tif", np.ones((4, 4), np.uint8))
    with pytest.raises(InputError, match="non-negative integers"):
        write_export("cells", tmp_path / "c.tif", -np.ones((4, 4), np.int32))
    assert not list(tmp_path.iterdir())


def test_writers_tell_cells_from_masks(tmp_path):
    cells = np.zeros((8, 8), np.int32)
    cells[:4], cells[4:] = 1, 2  # two cells: values alone look like annotation
    [path] = write_labels(str(tmp_path / "c.tif"), cells, {"metadata": {PREDICTED: "cells"}})
    np.testing.assert_array_equal(tifffile.imread(path), cells)
    [path] = write_labels(str(tmp_path / "m.tif"), cells, {"metadata": {}})
    np.testing.assert_array_equal(tifffile.imread(path), np.where(cells == 1, 255, 0))
    many = np.arange(64).reshape(8, 8)
    [path] = write_labels(str(tmp_path / "many.tif"), many, {})
    np.testing.assert_array_equal(tifffile.imread(path), many)
    [path] = write_probabilities(str(tmp_path / "p.tif"), np.full((8, 8), 0.25), {})
    assert tifffile.imread(path).dtype == np.float32
    with pytest.raises(OSError, match="exists"):
        write_probabilities(path, np.zeros((8, 8)), {})
