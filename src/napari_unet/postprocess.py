"""From membrane probabilities to a membrane mask and cell instance labels."""

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from .labels import INTERIOR, MEMBRANE

FOUR = ndi.generate_binary_structure(2, 1)


def membrane_mask(probabilities: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """Threshold P(membrane) into annotation labels (1 = membrane, 2 = interior).

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) float ndarray
        P(membrane) in [0, 1].
    threshold : float
        Membrane where the probability is above it.

    Returns
    -------
    mask : uint8 ndarray
        The annotation convention, so it can be corrected and trained on directly.
    """
    return np.where(np.asarray(probabilities) > threshold, MEMBRANE, INTERIOR).astype(np.uint8)


def _cells_of_slice(probabilities: np.ndarray, threshold: float, min_size: int) -> np.ndarray:
    interior = probabilities <= threshold
    seeds, _ = ndi.label(interior, structure=FOUR)
    if min_size > 1:
        seeds = remove_small_objects(seeds, max_size=min_size - 1)
    if not seeds.any():
        return np.zeros(probabilities.shape, np.int32)
    # Flood the membranes from the cells, along the probability landscape, so the
    # cells tile the slice and meet on the membranes' crests.
    return watershed(probabilities, seeds).astype(np.int32)


def cell_labels(
    probabilities: np.ndarray, *, threshold: float = 0.5, min_size: int = 30
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
