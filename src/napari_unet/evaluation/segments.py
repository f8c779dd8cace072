"""Segments of a membrane map, as the ISBI 2012 challenge labels them before scoring.

The challenge (Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142) scores a
proposal "after border thinning": Fiji's ``WatershedTransform2D`` floods the
proposal's membrane from its cells, so that the membrane is split between the
cells on its two sides and only the dams where two floods meet stay boundary.
This module is our own implementation of that step (numpy, scipy and a numba
loop); `napari_unet.evaluation.scores` scores the segments it gives, and
docs/metrics.md compares it with the official code.

- **Basins**: the 4-connected components of the non-membrane pixels (the
  challenge labels cells 4-connected).
- **Flood**: Vincent and Soille's watershed by flooding on the two-level image,
  4-connected and breadth-first. Each membrane pixel takes the basin that
  reaches it first; a pixel reached by two basins is a dam, a line about one
  pixel wide (`segments_from_membrane`). A map without any cell pixel is one
  segment.
- **Without thinning**, the segments are the basins and every membrane pixel
  is boundary: how the challenge labels its ground truth.

The flood is a plain loop over pixels, compiled by numba on first use and
cached on disk (`_compiled_flood`); it stays runnable as Python.
"""

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from napari_unet.errors import InputError
from napari_unet.io.labels import label_values

# 4-connectivity: the challenge labels both the ground truth's and the
# proposal's cells with it, and floods the proposal's membrane with it.
FOUR_NEIGHBOURS = ndi.generate_binary_structure(2, 1)

# States of a pixel of `flood_membrane`'s label map; basins are 1, 2, ...
_DAM = 0
_UNREACHED = -1
_QUEUED = -2
# A pixel's four neighbours as (row, column) steps, in the order the flood
# visits them: left, up, right, down. With the column-by-column seeding, this
# order decides which pixels are decided first, and so where a dam falls in a
# band of even width.
_STEPS = ((0, -1), (-1, 0), (0, 1), (1, 0))


def segments_from_membrane(
    membrane: np.ndarray, *, thin: bool = True, mask: np.ndarray | None = None
) -> np.ndarray:
    """Turn a binary membrane map into labelled segments, as the challenge scores a proposal.

    With `thin`, the challenge's border thinning: the 4-connected components
    of the non-membrane pixels are basins, and a breadth-first watershed flood
    (4-connected) hands every membrane pixel to the basin that reaches it
    first. The flood starts from the membrane pixels that touch a basin, taken
    column by column (top to bottom within a column, columns left to right),
    and visits neighbours left, up, right, down. A membrane pixel is decided
    when the flood reaches it, from its neighbours decided before it: it joins
    their basin if they hold exactly one, and becomes a dam (label 0) if they
    hold two or more, or only dams. Dams are lines about one pixel wide (a
    pixel reached only through dams thickens them, rarely); a band of even
    width gets its dam on the side the flood reaches later (the right or lower
    side of a straight band). Thinning neither joins nor creates segments, and
    a map without any non-membrane pixel is a single segment.

    Without `thin`, the segments are the 4-connected components of the
    non-membrane pixels and every membrane pixel is 0 (how the challenge
    labels its ground truth).

    Parameters
    ----------
    membrane : (Y, X) ndarray of bool
        True on membrane (boundary) pixels.
    thin : bool
        Thin the membranes by the watershed flood first.
    mask : (Y, X) ndarray of bool, optional
        Pixels that may belong to a segment (for example the annotated ones):
        the others are label 0 and, like membrane, do not connect segments
        (with `thin` they are flooded as membrane, then set to 0).

    Returns
    -------
    segments : (Y, X) ndarray of int32
        0 on boundary (dam) pixels and outside `mask`, 1..N on the segments.

    Raises
    ------
    InputError
        When `membrane` is not a 2D binary map or `mask` has another shape.
    """
    membrane = as_binary(membrane, "membrane")
    if membrane.ndim != 2:
        raise InputError(f"membrane has shape {membrane.shape}; expected one (Y, X) slice")
    if mask is not None:
        mask = as_binary(mask, "mask")
        check_same_shape(mask, membrane, "mask", "membrane")
        membrane = membrane | ~mask
    if thin:
        segments = flood_membrane(membrane)
    else:
        segments = ndi.label(~membrane, FOUR_NEIGHBOURS)[0].astype(np.int32)
    if mask is not None:
        segments[~mask] = 0
    return segments


def flood_membrane(membrane: np.ndarray) -> np.ndarray:
    """Label the basins of a membrane map and flood its membrane (see `segments_from_membrane`)."""
    labels, count = ndi.label(~membrane, FOUR_NEIGHBOURS)
    labels = labels.astype(np.int32)
    if count == 0:
        # Nothing but membrane: the flood finds one minimum, the whole image.
        return np.ones(membrane.shape, np.int32)
    if membrane.any():
        labels[membrane] = _UNREACHED
        _compiled_flood()(labels, np.empty(np.count_nonzero(membrane), np.int64))
    return labels


@functools.cache
def _compiled_flood() -> Callable[[np.ndarray, np.ndarray], None]:
    """Compile `_flood` with numba, on first use.

    numba is imported here, not with this module, so ``import napari_unet``
    stays light (as in `napari_unet.training.nearest_cells`); ``cache=True`` keeps the
    machine code on disk after the first compile.
    """
    import numba

    return numba.njit(cache=True, nogil=True)(_flood)


def _flood(labels: np.ndarray, queue: np.ndarray) -> None:
    """Flood the unreached pixels of `labels` from its basins, in place (compiled by numba).

    Our breadth-first form of Vincent and Soille's flooding (1991) for an
    image of two levels, basins (> 0) below membrane (`_UNREACHED`). Seeds
    are the membrane pixels touching a basin, in column-major order; a pixel
    is decided when it leaves the queue, from its neighbours decided before
    it: one basin among them gives that basin, two or more basins, or only
    dams, give a dam. Neighbours still unreached join the queue in `_STEPS`
    order. `queue` holds at least as many entries as there are membrane pixels.
    """
    height, width = labels.shape
    tail = 0
    for x in range(width):
        for y in range(height):
            if labels[y, x] != _UNREACHED:
                continue
            for dy, dx in _STEPS:
                v, u = y + dy, x + dx
                if 0 <= v < height and 0 <= u < width and labels[v, u] > 0:
                    labels[y, x] = _QUEUED
                    queue[tail] = y * width + x
                    tail += 1
                    break
    head = 0
    while head < tail:
        y, x = queue[head] // width, queue[head] % width
        head += 1
        basin = 0
        dam = False
        for dy, dx in _STEPS:
            v, u = y + dy, x + dx
            if not (0 <= v < height and 0 <= u < width):
                continue
            neighbour = labels[v, u]
            if neighbour > 0:
                if basin == 0:
                    basin = neighbour
                elif neighbour != basin:
                    dam = True
            elif neighbour == _UNREACHED:
                labels[v, u] = _QUEUED
                queue[tail] = v * width + u
                tail += 1
        labels[y, x] = _DAM if dam or basin == 0 else basin


# --- input checks, shared with `napari_unet.evaluation.scores` --------------------------------


def as_binary(array: np.ndarray, name: str) -> np.ndarray:
    """Return a bool or 0/1 array as bool; anything else is an `InputError` naming it."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.number) and set(label_values(array).tolist()) <= {0, 1}:
        return array != 0
    raise InputError(f"{name} must be a binary map (bool, or 0 and 1); got dtype {array.dtype}")


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise an `InputError` naming both arrays when their shapes differ."""
    if a.shape != b.shape:
        raise InputError(f"{name_a} shape {a.shape} differs from {name_b} shape {b.shape}")
