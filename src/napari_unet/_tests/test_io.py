import json
import os

import numpy as np
import pytest
import tifffile

from napari_unet.errors import InputError
from napari_unet.io.stacks import (
    MASK_KEY,
    cell_label_array,
    check_not_inputs,
    overlap,
    read_image,
    read_labels,
    write_mask,
    write_tiff,
)

ANNOTATION = np.array([[[1, 2], [2, 1]], [[2, 2], [1, 1]]], dtype=np.uint8)


def test_write_mask_round_trip(tmp_path):
    path = write_mask(tmp_path / "mask.tif", ANNOTATION)
    data = tifffile.imread(path)
    assert data.shape == ANNOTATION.shape
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, np.where(ANNOTATION == 1, 255, 0))
    np.testing.assert_array_equal(read_labels(path), ANNOTATION)


def test_write_mask_records_axes_and_convention(tmp_path):
    path = write_mask(tmp_path / "mask.tif", ANNOTATION, convention="isbi")
    with tifffile.TiffFile(path) as tif:
        meta = json.loads(tif.pages.first.description)
        assert tif.series[0].axes == "ZYX"
    assert meta[MASK_KEY] == "isbi"
    np.testing.assert_array_equal(tifffile.imread(path), np.where(ANNOTATION == 1, 0, 255))
    np.testing.assert_array_equal(read_labels(path), ANNOTATION)


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "mask.tif"
    path.write_bytes(b"precious")
    with pytest.raises(InputError, match="exists"):
        write_mask(path, ANNOTATION)
    assert path.read_bytes() == b"precious"
    write_mask(path, ANNOTATION, overwrite=True)
    np.testing.assert_array_equal(read_labels(path), ANNOTATION)
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]


def test_missing_folder(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        write_tiff(tmp_path / "nope" / "x.tif", ANNOTATION)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    with pytest.raises(InputError, match="No space left on device"):
        write_tiff(tmp_path / "x.tif", ANNOTATION)
    assert list(tmp_path.iterdir()) == []


def test_read_labels_isbi_file(tmp_path):
    tifffile.imwrite(tmp_path / "isbi.tif", np.where(ANNOTATION == 1, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(read_labels(tmp_path / "isbi.tif"), ANNOTATION)


def test_read_labels_foreign_values(tmp_path):
    tifffile.imwrite(tmp_path / "bad.tif", np.array([[0, 7]], np.uint8))
    with pytest.raises(InputError, match=r"bad.tif: label values \[7\] fit no convention"):
        read_labels(tmp_path / "bad.tif")


def test_read_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "corrupt.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="not a readable TIFF"):
        read_image(tmp_path / "corrupt.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        read_image(tmp_path / "rgb.tif")


def test_three_and_four_slice_stacks_stay_stacks(tmp_path):
    for depth in (3, 4):
        stack = np.arange(depth * 8 * 8, dtype=np.uint16).reshape(depth, 8, 8)
        path = write_tiff(tmp_path / f"s{depth}.tif", stack)
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == depth
        np.testing.assert_array_equal(read_image(path), stack)


def test_written_files_get_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = write_mask(tmp_path / "mask.tif", ANNOTATION)
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(("top", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16),
                                            (65535, np.uint16), (65536, np.uint32)])
def test_cell_labels_take_the_smallest_dtype_that_holds_them(top, dtype):
    labels = np.array([[0, top]], dtype=np.int64)
    cells = cell_label_array(labels)
    assert cells.dtype == dtype
    np.testing.assert_array_equal(cells, labels)


def test_overlap_follows_links_and_folders(tmp_path):
    image = tmp_path / "im.tif"
    image.write_bytes(b"image")
    (tmp_path / "soft.tif").symlink_to(image)
    os.link(image, tmp_path / "hard.tif")
    volume = tmp_path / "v.zarr"
    volume.mkdir()
    assert overlap(image, tmp_path / "sub" / ".." / "im.tif") == "is"
    assert overlap(tmp_path / "soft.tif", image) == "is"
    assert overlap(tmp_path / "hard.tif", image) == "is"
    assert overlap(volume / "mask.zarr", volume) == "is inside"
    assert overlap(volume, volume / "0") == "holds"
    assert overlap(tmp_path / "other.tif", image) is None
    assert overlap(tmp_path / "v.zarr.old", volume) is None


def test_check_not_inputs_names_the_clash(tmp_path):
    image = tmp_path / "im.tif"
    image.write_bytes(b"image")
    with pytest.raises(InputError, match=r"^-o .*im\.tif is the image: an input is never"):
        check_not_inputs({"-o": image}, {"the image": image})
    with pytest.raises(InputError, match="-o and --probabilities both name"):
        check_not_inputs({"-o": tmp_path / "a.tif", "--probabilities": tmp_path / "a.tif"},
                         {"the image": image})
    check_not_inputs({"-o": tmp_path / "a.tif"}, {"the image": image})  # no clash
