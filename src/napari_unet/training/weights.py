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
Euclidean distance transform per cell. Here the two nearest distinct cells of
every pixel come from a separable transform instead: pass 1 finds, along each
row, the nearest cell and the nearest *other* cell of every pixel (exact, from
the runs of interior pixels); pass 2 looks up and down each column from the
non-interior pixels only and keeps the two smallest distances to distinct
cells, stopping as soon as no row further away can be closer. Keeping two
distinct cells per row is enough for the second-nearest cell to be exact, in
the same way as one per row is enough for the ordinary distance transform.
The border term is cut off where d1 + d2 >= TRUNCATE * sigma, which bounds the
search and changes w by at most w0 * exp(-18).

Both passes are plain loops over pixels, compiled by numba on first use and
cached on disk (see `_compiled_passes`); they stay runnable as Python.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from napari_unet.checks import check_dtype, check_finite, check_not_empty
from napari_unet.errors import InputError
from napari_unet.io.labels import INTERIOR, MEMBRANE, UNLABELLED, label_values

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
    sq1, sq2 = _two_nearest_cells(cells, pixels, cutoff=cutoff)
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


# Keys pack a squared distance and a cell: ``key = squared_distance << 32 | cell``.
# Comparing keys compares distances first, and two keys hold the same cell when
# their low 32 bits agree.
_CELL_BITS = 32
_CELL_MASK = (1 << _CELL_BITS) - 1
_OUT = 1 << 62
"""Set on a key to put it out of the running: above every key."""

_MAX_REACH = 23_169
"""Farthest distance measured, in pixels.

Pass 2 adds squared distances up to 2 * (_MAX_REACH + 1)**2 < 2**30, so keys
stay below _OUT.
"""


@functools.cache
def _compiled_passes() -> tuple[Callable, Callable]:
    """Compile the two passes with numba, on first use.

    numba is imported here rather than with this module, which the
    configuration imports, so ``import napari_unet`` stays light.
    ``cache=True`` keeps the machine code on disk: the compile cost (a few
    seconds) is paid once per machine. ``nogil=True`` lets a napari worker
    thread run the passes beside the GUI. The helpers that the passes call are
    registered with numba first; they stay plain Python functions.
    """
    import numba

    for helper in (_key, _merge, _find_runs, _other_cell_runs):
        numba.extending.register_jitable(helper)
    jit = numba.njit(cache=True, nogil=True)
    return jit(_row_pass), jit(_column_pass)


def _two_nearest_cells(
    cells: np.ndarray, pixels: np.ndarray, *, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Measure the squared distances from pixels to their nearest and second-nearest cell.

    Parameters
    ----------
    cells : (Y, X) int32 ndarray
        Cells labelled 1..n, 0 outside them.
    pixels : (P,) ndarray
        Flat indices of the pixels to measure, all outside the cells, in
        increasing order.
    cutoff : float
        Exact wherever d1 + d2 < ``cutoff``; elsewhere d1 + d2 >= ``cutoff``.
        Nothing beyond `_MAX_REACH` (23169 pixels) is measured: where both
        the cut-off and the image diagonal exceed it (a sigma over 3861
        pixels), the cut-off is 23169 instead.

    Returns
    -------
    sq1, sq2 : (P,) int64 ndarray
        d1**2 and d2**2.
    """
    height, width = cells.shape
    # No distance in the image exceeds its diagonal: a shorter reach is exact.
    reach = min(math.ceil(cutoff), math.ceil(math.hypot(height, width)), _MAX_REACH)
    row_pass, column_pass = _compiled_passes()
    keys = np.empty((height, width, 2), np.int64)
    row_pass(np.ascontiguousarray(cells, np.int32), reach + 1, keys)
    pixels = np.ascontiguousarray(pixels, np.int64)
    sq1, sq2 = np.empty(len(pixels), np.int64), np.empty(len(pixels), np.int64)
    column_pass(keys, pixels, reach, sq1, sq2)
    return sq1, sq2


# The functions below are compiled by numba (see `_compiled_passes`).


def _key(distance: int, far: int, cell: int) -> int:
    """Pack a distance, capped at ``far``, and a cell into a key."""
    return np.int64(min(distance, far)) ** 2 << _CELL_BITS | cell


def _merge(first: int, second: int, other_first: int, other_second: int) -> tuple[int, int]:
    """Merge two pairs of keys into the pair of the two nearest distinct cells.

    Each pair holds two distinct cells, nearest first. The nearest of all is
    the nearer of the two firsts; the second is the nearer of the two seconds
    and of the farther first, the latter only if it is of another cell.
    """
    same = ((first ^ other_first) & _CELL_MASK) == 0
    farther = max(first, other_first) | same * _OUT
    return min(first, other_first), min(second, other_second, farther)


def _row_pass(cells: np.ndarray, far: int, keys: np.ndarray) -> None:
    """Pass 1: the nearest cell and the nearest other cell of every pixel, along rows.

    Parameters
    ----------
    cells : (Y, X) int32 ndarray
        Cells labelled 1..n, 0 outside them.
    far : int
        Distances are capped at this value; cell 0 stands for no cell nearer.
        Keys at the cap may come in any order: their value no longer matters.
    keys : (Y, X, 2) int64 ndarray
        Written: the keys of the nearest cell and of the nearest other cell
        of each pixel in its row.
    """
    height, width = cells.shape
    start, end = np.empty(width + 2, np.int64), np.empty(width + 2, np.int64)
    cell = np.empty(width + 2, np.int64)
    before, after = np.empty(width + 2, np.int64), np.empty(width + 2, np.int64)
    for y in range(height):
        out = keys[y]
        last = _find_runs(cells[y], far, start, end, cell)
        _other_cell_runs(cell, last, before, after)
        for j in range(last):
            # Run j's pixels (the left sentinel has none): their cell, then the
            # nearer of the runs of another cell on either side.
            a, b = before[j], after[j]
            for x in range(max(start[j], 0), end[j] + 1):
                out[x, 0] = _key(0, far, cell[j])
                out[x, 1] = min(_key(x - end[a], far, cell[a]), _key(start[b] - x, far, cell[b]))
            # The gap after run j: the nearest two on the left merged with those on the right.
            a, b = before[j], after[j + 1]
            for x in range(max(end[j] + 1, 0), min(start[j + 1], width)):
                out[x, 0], out[x, 1] = _merge(
                    _key(x - end[j], far, cell[j]),
                    _key(x - end[a], far, cell[a]),
                    _key(start[j + 1] - x, far, cell[j + 1]),
                    _key(start[b] - x, far, cell[b]),
                )


def _find_runs(
    row: np.ndarray, far: int, start: np.ndarray, end: np.ndarray, cell: np.ndarray
) -> int:
    """Find the runs of cell pixels in a row; return the index of the last run.

    Writes the first and last pixel and the cell of each run into ``start``,
    ``end`` and ``cell``. The first and last runs are sentinels of no cell
    (0), ``far`` beyond the ends of the row.
    """
    start[0] = end[0] = -far
    cell[0] = 0
    count = 1
    for x in range(len(row)):
        if row[x]:
            # Cells are 4-connected: pixels of two cells never touch in a row.
            if x == 0 or not row[x - 1]:
                start[count], cell[count] = x, row[x]
                count += 1
            end[count - 1] = x
    start[count] = end[count] = len(row) - 1 + far
    cell[count] = 0
    return count


def _other_cell_runs(cell: np.ndarray, last: int, before: np.ndarray, after: np.ndarray) -> None:
    """Find the nearest run of another cell before and after each run (sentinels: themselves)."""
    before[0] = 0
    for j in range(1, last + 1):
        before[j] = j - 1 if cell[j - 1] != cell[j] else before[j - 1]
    after[last] = last
    for j in range(last - 1, -1, -1):
        after[j] = j + 1 if cell[j + 1] != cell[j] else after[j + 1]


def _column_pass(
    keys: np.ndarray, pixels: np.ndarray, reach: int, sq1: np.ndarray, sq2: np.ndarray
) -> None:
    """Pass 2: merge the row results of the rows above and below each pixel.

    The rows ``dy`` above and below add ``dy**2`` to the squared distances they
    hold, so the search stops as soon as ``dy**2`` reaches the second-nearest
    squared distance found so far, or ``dy`` passes ``reach``. Keeping two
    distinct cells per row is enough for the second-nearest cell to be exact,
    as one per row is enough for the ordinary distance transform.

    Parameters
    ----------
    keys : (Y, X, 2) int64 ndarray
        The row results of `_row_pass`.
    pixels : (P,) int64 ndarray
        Flat indices of the pixels to measure, in increasing order.
    reach : int
        The farthest row searched.
    sq1, sq2 : (P,) int64 ndarray
        Written: the squared distances to the nearest and second-nearest cell.
    """
    height, width, _ = keys.shape
    y = 0
    for i in range(len(pixels)):
        # The pixels come in order: find their row without a division.
        while pixels[i] >= (y + 1) * width:
            y += 1
        x = pixels[i] - y * width
        first, second = keys[y, x, 0], keys[y, x, 1]
        dy = 1
        while dy <= reach and dy * dy < second >> _CELL_BITS:
            # Past the image edge, the edge row again: farther, so no change.
            up, down = keys[max(y - dy, 0), x], keys[min(y + dy, height - 1), x]
            row_first, row_second = _merge(up[0], up[1], down[0], down[1])
            shift = dy * dy << _CELL_BITS
            first, second = _merge(first, second, row_first + shift, row_second + shift)
            dy += 1
        sq1[i], sq2[i] = first >> _CELL_BITS, second >> _CELL_BITS
