"""From membrane probabilities to a membrane mask and cell instance labels."""

import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from napari_unet.io.labels import INTERIOR, MEMBRANE

FOUR = ndi.generate_binary_structure(2, 1)
MIN_CELL_SIZE = 30
"""Interiors smaller than this many pixels seed no cell (noise)."""


def membrane_mask(probabilities: np.ndarray, *, threshold: float = 0.5,
                  close_gaps: float | None = None) -> np.ndarray:
    """Threshold P(membrane) into annotation labels (1 = membrane, 2 = interior).

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) float ndarray
        P(membrane) in [0, 1].
    threshold : float
        Membrane where the probability is above it.
    close_gaps : float or None
        Also mark as membrane the one-pixel watershed lines between the cells
        seeded where the probability is at most this (`gap_lines`), so a faint
        stretch of membrane below ``threshold`` still separates its two cells.
        None: the threshold alone.

    Returns
    -------
    mask : uint8 ndarray
        The annotation convention, so it can be corrected and trained on directly.
    """
    return np.where(is_membrane(probabilities, threshold=threshold, close_gaps=close_gaps),
                    MEMBRANE, INTERIOR).astype(np.uint8)


def is_membrane(probabilities: np.ndarray, *, threshold: float = 0.5,
                close_gaps: float | None = None) -> np.ndarray:
    """Return the exported mask as booleans (True = membrane); see `membrane_mask`."""
    probabilities = np.asarray(probabilities)
    membrane = probabilities > threshold
    if close_gaps is not None:
        membrane |= gap_lines(probabilities, level=close_gaps)
    return membrane


def lazy_membrane(probabilities: da.Array, *, threshold: float = 0.5,
                  close_gaps: float | None = None) -> da.Array:
    """`is_membrane` of a lazy (Y, X) or (Z, Y, X) array; gaps are closed on whole slices."""
    if close_gaps is None:
        return probabilities > threshold
    whole = probabilities.rechunk({-1: -1, -2: -1})
    return whole.map_blocks(is_membrane, threshold=threshold, close_gaps=close_gaps, dtype=bool)


def gap_lines(probabilities: np.ndarray, *, level: float = 0.2,
              min_size: int = MIN_CELL_SIZE) -> np.ndarray:
    """Return the one-pixel lines where the cells of `cell_labels` meet (True = line).

    The cells are seeded by the confident interiors (probability at most
    ``level``, at least ``min_size`` pixels) and grown over the membrane
    probability by a watershed, so they meet on the membranes' crests, also
    where a crest is too faint to pass the threshold. Slice by slice.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    stack = probabilities[None] if probabilities.ndim == 2 else probabilities
    lines = np.zeros(stack.shape, bool)
    for plane, out in zip(stack, lines, strict=True):
        cells = _cells_of_slice(plane, level, min_size)
        out[1:] |= cells[1:] != cells[:-1]
        out[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    return lines[0] if probabilities.ndim == 2 else lines


def _cells_of_slice(probabilities: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    interior = probabilities <= threshold
    seeds, _ = ndi.label(interior, structure=FOUR)
    small = np.bincount(seeds.ravel()) < min_size
    small[0] = False  # the background stays
    seeds[small[seeds]] = 0
    if not seeds.any():
        return np.zeros(probabilities.shape, np.int32)
    # Flood the membranes from the cells, along the probability landscape, so the
    # cells tile the slice and meet on the membranes' crests.
    return watershed(probabilities, seeds).astype(np.int32)


def cell_labels(
    probabilities: np.ndarray, *, threshold: float = 0.5, min_size: int = MIN_CELL_SIZE
) -> np.ndarray:
    """Label cells: connected interiors as seeds, grown over the membranes by a watershed.

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) float ndarray
        P(membrane); stacks are labelled slice by slice.
    threshold : float
        Interior where the probability is at most this.
    min_size : int
        Interiors smaller than this many pixels seed no cell (noise); they are
        absorbed by their neighbours.

    Returns
    -------
    labels : int32 ndarray
        0 only where a slice has no cell at all; labels are unique across the stack.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    stack = probabilities[None] if probabilities.ndim == 2 else probabilities
    out = np.zeros(stack.shape, np.int32)
    offset = 0
    for z, plane in enumerate(stack):
        cells = _cells_of_slice(plane, threshold, min_size)
        _, inverse = np.unique(cells, return_inverse=True)  # consecutive labels per slice
        cells = inverse.reshape(cells.shape).astype(np.int32) + (0 if cells.min() == 0 else 1)
        out[z] = np.where(cells > 0, cells + offset, 0)
        offset = int(out[z].max(initial=offset))
    return out[0] if probabilities.ndim == 2 else out
