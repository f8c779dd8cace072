"""Pixel weight maps for U-Net's loss (Ronneberger et al. 2015, eq. 2).

The weight of pixel x is

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

(Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", eq. 2), where w_c balances the class
frequencies and d1, d2 are the Euclidean distances to the nearest and the
second-nearest cell. The border term makes the network learn the thin
membranes that separate touching cells.

How the distances are computed
------------------------------
Cells are labelled with OpenCV's connected components (4-connectivity, the
same partition as ``scipy.ndimage.label``). The naive method runs one
Euclidean distance transform per cell; `napari_unet.training.nearest_cells`
finds the two nearest distinct cells of every pixel with a separable
transform instead, in two numba-compiled passes over rows and columns.
The border term is cut off where d1 + d2 >= TRUNCATE * sigma, which bounds the
search and changes w by at most w0 * exp(-18).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from napari_unet.checks import check_dtype, check_finite, check_not_empty
from napari_unet.errors import InputError
from napari_unet.io.labels import INTERIOR, MEMBRANE, UNLABELLED, label_values
from napari_unet.training.nearest_cells import two_nearest_cells

TRUNCATE = 6.0
"""Cut-off of the border term, in units of sigma.

Where d1 + d2 >= TRUNCATE * sigma the border term is set to 0; it would be at
most w0 * exp(-TRUNCATE**2 / 2) = 1.5e-8 * w0 there. Each cell therefore only
influences pixels within TRUNCATE * sigma of it, which bounds the search.
"""


@dataclass(frozen=True)
class WeightConfig:
    """Settings of the weight map, shared by training, the CLI and the GUI.

    The defaults are those of Ronneberger et al. (2015), section 3.

    Parameters
    ----------
    w0 : float
        Height of the border term, w0 in eq. 2 (paper: 10).
    sigma : float
        Width of the border term in pixels, sigma in eq. 2 (paper: 5).
    balance : bool
        Whether w_c balances the class frequencies (N / (2 N_class)); when
        False, w_c = 1.
    membrane_weight : float
        A factor on w_c of membrane pixels, after the balance (not in the paper;
        1 = the paper's weights). Plain cross-entropy with a membrane weight of 2
        is ``w0=0, balance=False, membrane_weight=2``.
    """

    w0: float = 10.0
    sigma: float = 5.0
    balance: bool = True
    membrane_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_options(self.w0, self.sigma)
        if not (math.isfinite(self.membrane_weight) and self.membrane_weight > 0):
            raise InputError(f"membrane_weight must be a finite number > 0, got "
                             f"{self.membrane_weight}")

    def of(self, labels: np.ndarray) -> np.ndarray:
        """Return the weight map of annotation labels with these settings.

        `annotation_weight_map` with ``w0``, ``sigma`` and ``balance``, the
        membrane pixels' class weight multiplied by ``membrane_weight``.
        """
        return annotation_weight_map(labels, w0=self.w0, sigma=self.sigma, balance=self.balance,
                                     membrane_factor=self.membrane_weight)


def weight_map(
    mask: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, balance: bool = True
) -> np.ndarray:
    """Compute the U-Net weight map of a binary cell mask (eq. 2 of the paper).

    ``w = w_c + w0 * exp(-(d1 + d2)**2 / (2 * sigma**2))`` (Ronneberger et al.
    2015, eq. 2). Cells are the 4-connected components of the interior; d1 and
    d2 are the Euclidean distances to the nearest and the second-nearest cell.
    The border term applies on non-interior pixels only, and is 0 where there
    are fewer than two cells or where d1 + d2 >= ``TRUNCATE * sigma``.

    Parameters
    ----------
    mask : (Y, X) ndarray
        Nonzero = cell interior. Any numeric or bool dtype; not modified.
    w0 : float
        Height of the border term (paper: 10).
    sigma : float
        Width of the border term, in pixels (paper: 5).
    balance : bool
        With True, ``w_c = N / (2 N_class)``: N pixels in all, N_class of the
        pixel's class (interior or not), so each class weighs half the total.
        With False, ``w_c = 1``.

    Returns
    -------
    weights : (Y, X) float32 ndarray

    Raises
    ------
    InputError
        When ``mask`` is not a finite, non-empty 2D array, or the options are
        out of range.
    """
    _check_options(w0, sigma)
    interior = _check_2d(mask, "mask") != 0
    weights = _class_weights(interior, balance=balance)
    _add_border_term(weights, interior, np.flatnonzero(~interior), w0=w0, sigma=sigma)
    return weights


def annotation_weight_map(
    labels: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, balance: bool = True,
    membrane_factor: float = 1.0,
) -> np.ndarray:
    """Compute the weight map of (possibly partial) annotation labels.

    As `weight_map`, with cells the 4-connected components of
    ``labels == 2`` (interior). The class balance counts annotated pixels only,
    and pixels that are not annotated (0) get weight exactly 0, so the loss
    ignores them.

    Parameters
    ----------
    labels : (Y, X) ndarray
        Annotation labels: 0 = not annotated, 1 = membrane, 2 = interior.
        Not modified.
    w0 : float
        Height of the border term (paper: 10).
    sigma : float
        Width of the border term, in pixels (paper: 5).
    balance : bool
        With True, ``w_c = N / (2 N_class)`` over the annotated pixels; with
        False, ``w_c = 1`` on annotated pixels.
    membrane_factor : float
        Multiplies w_c of the membrane pixels (1: the paper's weights).

    Returns
    -------
    weights : (Y, X) float32 ndarray
        0 where ``labels == 0``.

    Raises
    ------
    InputError
        When ``labels`` is not a 2D array of values in {0, 1, 2}, or the
        options are out of range.
    """
    _check_options(w0, sigma)
    labels = _check_2d(labels, "labels")
    extra = sorted(set(label_values(labels).tolist()) - {0, 1, 2})
    if extra:
        raise InputError(
            f"labels hold values {extra[:5]}; expected 0 = not annotated, 1 = membrane, "
            "2 = interior"
        )
    interior = labels == INTERIOR
    weights = _class_weights(interior, labels != UNLABELLED, balance=balance)
    membrane = np.flatnonzero(labels == MEMBRANE)
    if membrane_factor != 1.0:
        weights.flat[membrane] *= np.float32(membrane_factor)
    _add_border_term(weights, interior, membrane, w0=w0, sigma=sigma)
    return weights


def _check_options(w0: float, sigma: float) -> None:
    if not (math.isfinite(w0) and w0 >= 0):
        raise InputError(f"w0 must be a finite number >= 0, got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a finite number > 0, got {sigma}")


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(
            f"{name} has {array.ndim} axes (shape {array.shape}); the weight map needs one "
            "(Y, X) slice"
        )
    check_not_empty(array.shape, name=name)
    check_dtype(array.dtype, name=name, bool_ok=True, expected="integers, floats or bool")
    check_finite(array, name=name)
    return array


def _class_weights(
    interior: np.ndarray, annotated: np.ndarray | None = None, *, balance: bool
) -> np.ndarray:
    """Return w_c: N / (2 N_class) with ``balance``, else 1; 0 where not annotated."""
    n_total = interior.size if annotated is None else np.count_nonzero(annotated)
    n_interior = np.count_nonzero(interior)
    n_other = n_total - n_interior
    if balance:
        w_interior = n_total / (2 * n_interior) if n_interior else 0.0
        w_other = n_total / (2 * n_other) if n_other else 0.0
    else:
        w_interior = w_other = 1.0
    weights = np.where(interior, np.float32(w_interior), np.float32(w_other))
    if annotated is not None:
        weights *= annotated
    return weights


def _add_border_term(
    weights: np.ndarray, interior: np.ndarray, pixels: np.ndarray, *, w0: float, sigma: float
) -> None:
    """Add eq. 2's border term to ``weights`` at the flat indices ``pixels``, in place.

    ``pixels`` must all be outside the interior, in increasing order.
    """
    if w0 == 0 or not pixels.size:
        return
    cells, n_cells = _label_cells(interior)
    if n_cells < 2:
        return
    cutoff = TRUNCATE * sigma
    sq1, sq2 = two_nearest_cells(cells, pixels, cutoff=cutoff)
    d = np.sqrt(sq1, dtype=np.float32)
    d += np.sqrt(sq2, dtype=np.float32)
    term = np.exp(d * d * np.float32(-0.5 / sigma**2))
    term *= np.float32(w0)
    term *= d < cutoff
    weights.ravel()[pixels] += term


def _label_cells(interior: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected components of the interior (1..n, 0 elsewhere)."""
    image = np.ascontiguousarray(interior, dtype=bool).view(np.uint8)
    count, cells = cv2.connectedComponents(image, connectivity=4, ltype=cv2.CV_32S)
    return cells, count - 1
