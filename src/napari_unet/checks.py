"""Checks on user images, labels and sizes, each failing with a one-line message.

Every module that takes arrays or sizes from a user checks them here, so the
same mistake reads the same wherever it is made.
"""

import operator

import numpy as np

from napari_unet.errors import InputError

MIN_SIDE = 8
"""Smallest slice side (pixels) to train on or predict; smaller slices hold too little."""


def check_dtype(dtype, *, name: str, bool_ok: bool = False,
                expected: str = "integers or floats") -> None:
    """Check that a dtype holds real numbers.

    Parameters
    ----------
    dtype : numpy dtype or anything `numpy.dtype` takes
    name : str
        How the message names the array.
    bool_ok : bool
        Whether bool is a number here (a mask).
    expected : str
        What the message asks for instead.

    Raises
    ------
    InputError
        For a non-numeric dtype, bool (unless ``bool_ok``) or a complex dtype.
    """
    dtype = np.dtype(dtype)
    if dtype == np.dtype(bool):
        if bool_ok:
            return
        raise InputError(f"{name} has dtype {dtype}; expected {expected}")
    if not np.issubdtype(dtype, np.number):
        raise InputError(f"{name} has dtype {dtype}; expected {expected}")
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{name} is complex; expected real values")


def check_image_shape(shape: tuple[int, ...], *, name: str = "image") -> None:
    """Check that a shape is a single-channel (Y, X) image or (Z, Y, X) stack.

    Raises
    ------
    InputError
        For RGB(A), fewer than 2 or more than 3 axes, or no pixels.
    """
    shape = tuple(shape)
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        raise InputError(
            f"{name} looks like RGB(A) (shape {shape}); convert it to one channel first"
        )
    if len(shape) not in (2, 3):
        raise InputError(f"{name} has {len(shape)} axes (shape {shape}); expected (Y, X) "
                         "or (Z, Y, X)")
    check_not_empty(shape, name=name)


def check_not_empty(shape: tuple[int, ...], *, name: str) -> None:
    """Raise InputError when a shape holds no element."""
    if 0 in tuple(shape):
        raise InputError(f"{name} is empty (shape {tuple(shape)})")


def check_finite(array: np.ndarray, *, name: str) -> None:
    """Raise InputError when a float array holds NaN or inf (reads every value)."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf values")


def check_image(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Check that an array is a single-channel 2D image or (Z, Y, X) stack.

    Parameters
    ----------
    image : (Y, X) or (Z, Y, X) ndarray
        Any integer or float dtype.
    name : str
        How the message names the array.

    Returns
    -------
    image : ndarray
        The same array, unchanged.

    Raises
    ------
    InputError
        For RGB(A) data, fewer than 2 or more than 3 axes, an empty array, a
        non-numeric dtype, or NaN/inf values.
    """
    image = np.asarray(image)
    check_dtype(image.dtype, name=name)
    check_image_shape(image.shape, name=name)
    check_finite(image, name=name)
    return image


def check_pair(image: np.ndarray, labels: np.ndarray) -> None:
    """Check that an image and its labels can train together.

    Parameters
    ----------
    image : (Y, X) or (Z, Y, X) ndarray
    labels : ndarray
        Must have the image's shape.

    Raises
    ------
    InputError
        When the image is invalid or the shapes differ.
    """
    check_image(image)
    if np.shape(labels) != np.shape(image):
        raise InputError(
            f"labels shape {np.shape(labels)} differs from image shape {np.shape(image)}"
        )


def check_slice_side(shape: tuple[int, ...], *, to: str, name: str = "image slices") -> None:
    """Raise InputError when the slices of a shape (its last two axes) are under `MIN_SIDE`.

    ``to`` ends the message: ``'image slices of 4x90 px are too small to train on'``.
    """
    height, width = tuple(shape)[-2:]
    if min(height, width) < MIN_SIDE:
        raise InputError(f"{name} of {height}x{width} px are too small to {to} (at least "
                         f"{MIN_SIDE} px a side)")


def check_positive(value, *, name: str) -> int:
    """Return a size (a tile side, a batch size) as an int, or raise if it is not one >= 1."""
    try:
        number = operator.index(value)
    except TypeError:
        number = int(value) if isinstance(value, float) and value.is_integer() else None
    if isinstance(value, bool) or number is None or number < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return number
