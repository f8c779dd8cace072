"""Checks on user images and labels, each failing with a one-line message."""

import numpy as np

from .errors import InputError


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
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number):
        raise InputError(f"{name} has dtype {image.dtype}; expected integers or floats")
    if np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"{name} is complex; expected a real-valued image")
    if image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] > 4:
        raise InputError(
            f"{name} looks like RGB(A) (shape {image.shape}); convert it to one channel first"
        )
    if image.ndim not in (2, 3):
        raise InputError(f"{name} has {image.ndim} axes (shape {image.shape}); expected (Y, X) "
                         "or (Z, Y, X)")
    if image.size == 0:
        raise InputError(f"{name} is empty (shape {image.shape})")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError(f"{name} contains NaN or inf values")
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
