"""The two nearest cells of every pixel, for the border term of U-Net's weight map.

Eq. 2 of Ronneberger, Fischer & Brox (2015) needs, for every pixel outside the
cells, d1 and d2: the Euclidean distances to the nearest and the
second-nearest cell. The naive method runs one Euclidean distance transform
per cell. Here the two nearest distinct cells of every pixel come from a
separable transform instead: pass 1 finds, along each row, the nearest cell
and the nearest *other* cell of every pixel (exact, from the runs of interior
pixels); pass 2 looks up and down each column from the requested pixels only
and keeps the two smallest distances to distinct cells, stopping as soon as no
row further away can be closer. Keeping two distinct cells per row is enough
for the second-nearest cell to be exact, in the same way as one per row is
enough for the ordinary distance transform. A cut-off on d1 + d2 (the weight
map's, `napari_unet.training.weights.TRUNCATE` sigmas) bounds the search.

Both passes are plain loops over pixels, compiled by numba on first use and
cached on disk (see `_compiled_passes`); they stay runnable as Python.
`two_nearest_cells` runs them; `napari_unet.training.weights` labels the
cells and turns the distances into weights.
"""

import functools
import math
from collections.abc import Callable

import numpy as np

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
    configuration imports (through `napari_unet.training.weights`), so
    ``import napari_unet`` stays light.
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


def two_nearest_cells(
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
