import numpy as np
import pytest

from napari_unet.checks import check_image, check_pair
from napari_unet.errors import InputError


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_accepts_2d_and_3d(dtype):
    check_image(np.zeros((8, 8), dtype))
    check_image(np.zeros((3, 8, 8), dtype))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), "looks like RGB"),
        (np.zeros((64, 64, 4), np.uint8), "looks like RGB"),
        (np.zeros((2, 3, 8, 8)), "4 axes"),
        (np.zeros(8), "1 axes"),
        (np.zeros((0, 8)), "empty"),
        (np.array([[1.0, np.nan]]), "NaN or inf"),
        (np.array([[1.0, np.inf]]), "NaN or inf"),
        (np.zeros((4, 4), bool), "dtype bool"),
        (np.zeros((4, 4), complex), "complex"),
    ],
)
def test_refuses_bad_images(image, message):
    with pytest.raises(InputError, match=message):
        check_image(image)


def test_check_pair_shapes():
    check_pair(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match=r"labels shape \(4, 4\) differs from image shape"):
        check_pair(np.zeros((2, 4, 4)), np.zeros((4, 4), np.uint8))
