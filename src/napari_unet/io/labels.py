"""Label conventions: annotation labels, ISBI files and exported masks.

DESIGN.md fixes three conventions:

- annotation labels (what training reads and napari paints): uint8,
  0 = not annotated, 1 = membrane, 2 = cell interior;
- ISBI 2012 label files: exactly {0, 255}, 0 = membrane, 255 = interior;
- exported masks: uint8, 255 = membrane, 0 = not membrane.
"""

from typing import Literal

import numpy as np

from napari_unet.checks import check_dtype, check_image, check_pair
from napari_unet.errors import InputError

UNLABELLED = 0
MEMBRANE = 1
INTERIOR = 2

# Display colours (RGBA) for annotation labels: membranes stand out, interiors
# tint the EM lightly, unannotated pixels stay clear.
LABEL_COLORS = {
    None: (0.0, 0.0, 0.0, 0.0),
    UNLABELLED: (0.0, 0.0, 0.0, 0.0),
    MEMBRANE: (1.0, 0.2, 0.6, 1.0),
    INTERIOR: (0.2, 0.8, 1.0, 0.25),
}

Convention = Literal["annotation", "isbi"]
MaskConvention = Literal["membrane", "isbi"]


def label_values(labels: np.ndarray) -> np.ndarray:
    """Return the sorted distinct values of a label array.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Integer (or integral float) labels.

    Returns
    -------
    values : (K,) ndarray
        The distinct values, ascending.
    """
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        # A histogram is ~20x faster than np.unique on uint8 volumes.
        return np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    return np.unique(labels)


def _convention_by_range(labels: np.ndarray) -> Convention | None:
    """Tell the convention of integer labels from their range, when it tells (else None).

    Labels within 0..2 are annotation; within 0..255 with every non-zero value 255, ISBI.
    A few passes, slice by slice: 2 ms on the 30 uint8 slices of ISBI, where the census of
    values (`label_values`) converts the stack to 64-bit integers first (30-110 ms, a GUI
    stall at every Start of training), and sorts 64-bit labels (150-250 ms).
    """
    if not np.issubdtype(labels.dtype, np.integer) or not labels.size:
        return None
    low, high = labels.min(), labels.max()
    if low >= 0 and high <= 2:
        return "annotation"
    slices = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels[None]
    if low >= 0 and high == 255 and all(
            np.count_nonzero(z) == np.count_nonzero(z == 255) for z in slices):
        return "isbi"
    return None


def label_convention(labels: np.ndarray) -> Convention:
    """Tell which convention a label array follows.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Labels in the annotation convention (values in {0, 1, 2}) or the ISBI
        convention (values in {0, 255}).

    Returns
    -------
    convention : {'annotation', 'isbi'}
        ``'annotation'`` when every value is 0, 1 or 2 (an all-zero array is an
        empty annotation); ``'isbi'`` when the values are 0 and 255.

    Raises
    ------
    InputError
        When the dtype is not numeric or the values fit neither convention.
    """
    labels = np.asarray(labels)
    check_dtype(labels.dtype, name="labels",
                expected="integers in {0, 1, 2} (annotation) or {0, 255} (ISBI)")
    by_range = _convention_by_range(labels)
    if by_range is not None:
        return by_range
    values = label_values(labels)
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise InputError("labels contain NaN or inf")
    present = set(values.tolist())
    if present <= {0, 1, 2}:
        return "annotation"
    if present <= {0, 255}:
        return "isbi"
    shown = sorted(present - {0, 1, 2, 255})[:5]
    raise InputError(
        f"label values {shown} fit no convention: use 0 = not annotated, 1 = membrane, "
        "2 = interior, or the ISBI convention 0 = membrane, 255 = interior"
    )


def isbi_to_annotation(labels: np.ndarray) -> np.ndarray:
    """Convert ISBI labels (0 = membrane, 255 = interior) to annotation labels.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Values in {0, 255}.

    Returns
    -------
    annotation : (..., Y, X) uint8 ndarray
        1 where ``labels == 0``, 2 where ``labels == 255``.
    """
    labels = np.asarray(labels)
    return np.where(labels == 0, MEMBRANE, INTERIOR).astype(np.uint8)


def annotation_to_isbi(labels: np.ndarray) -> np.ndarray:
    """Convert annotation labels to the ISBI convention.

    ISBI files have no "not annotated" value: every pixel that is not membrane
    becomes interior (255), as in an exported mask.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Annotation labels.

    Returns
    -------
    isbi : (..., Y, X) uint8 ndarray
        0 where ``labels == 1``, 255 elsewhere.
    """
    return export_mask(labels, convention="isbi")


def to_annotation(labels: np.ndarray) -> np.ndarray:
    """Return labels in the annotation convention, whichever convention they are in.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Annotation or ISBI labels.

    Returns
    -------
    annotation : (..., Y, X) uint8 ndarray
        A new array; the input is never modified.

    Raises
    ------
    InputError
        When the values fit neither convention.
    """
    if label_convention(labels) == "isbi":
        return isbi_to_annotation(labels)
    return np.asarray(labels).astype(np.uint8, copy=True)


def export_mask(labels: np.ndarray, *, convention: MaskConvention = "membrane") -> np.ndarray:
    """Make the exported-mask array of annotation labels.

    Parameters
    ----------
    labels : (..., Y, X) ndarray
        Annotation labels (1 = membrane).
    convention : {'membrane', 'isbi'}
        ``'membrane'``: 255 = membrane, 0 = not membrane (the default export).
        ``'isbi'``: 0 = membrane, 255 = not membrane.

    Returns
    -------
    mask : (..., Y, X) uint8 ndarray
    """
    membrane = np.asarray(labels) == MEMBRANE
    if convention == "membrane":
        return np.where(membrane, 255, 0).astype(np.uint8)
    if convention == "isbi":
        return np.where(membrane, 0, 255).astype(np.uint8)
    raise InputError(f"unknown mask convention {convention!r}; use 'membrane' or 'isbi'")


def mask_to_annotation(mask: np.ndarray, *, convention: MaskConvention) -> np.ndarray:
    """Read an exported mask back as annotation labels (the inverse of `export_mask`).

    Parameters
    ----------
    mask : (..., Y, X) ndarray
        Values in {0, 255}.
    convention : {'membrane', 'isbi'}
        The convention the mask was written in.

    Returns
    -------
    annotation : (..., Y, X) uint8 ndarray
        1 = membrane, 2 = interior.
    """
    mask = np.asarray(mask)
    if not set(label_values(mask).tolist()) <= {0, 255}:
        raise InputError("an exported mask holds only the values 0 and 255")
    membrane_value = {"membrane": 255, "isbi": 0}[convention]
    return np.where(mask == membrane_value, MEMBRANE, INTERIOR).astype(np.uint8)


def annotated_slices(labels: np.ndarray) -> list[int]:
    """Return the indices of the slices that hold any annotation.

    Parameters
    ----------
    labels : (Y, X) or (Z, Y, X) ndarray
        Annotation labels (0 = not annotated).

    Returns
    -------
    slices : list of int
        Indices along Z (``[0]`` for an annotated 2D image).
    """
    labels = np.asarray(labels)
    stack = labels[None] if labels.ndim == 2 else labels
    return np.flatnonzero(stack.reshape(len(stack), -1).any(axis=1)).tolist()


def describe_pair(image: np.ndarray, labels: np.ndarray | None) -> str:
    """Summarise an image and its labels in one line, or name what is wrong.

    Parameters
    ----------
    image : (Y, X) or (Z, Y, X) ndarray
    labels : ndarray or None
        Labels in either convention, or None when there are none yet.

    Returns
    -------
    summary : str
    """
    try:
        check_image(image)
        text = f"image {' x '.join(map(str, np.shape(image)))} {np.asarray(image).dtype}"
        if labels is None:
            return f"{text}; no labels"
        check_pair(image, labels)
        convention = label_convention(labels)
    except InputError as err:
        return f"problem: {err}"
    done = annotated_slices(to_annotation(labels))
    total = 1 if np.ndim(image) == 2 else np.shape(image)[0]
    return f"{text}; labels ({convention} convention): {len(done)}/{total} slices annotated"


def retraining_labels(
    mask: np.ndarray, corrected, original: np.ndarray | None = None
) -> np.ndarray:
    """Annotation labels to fine-tune on: corrected mask slices plus the original annotation.

    Earlier work is never forgotten: every slice annotated in ``original`` stays
    in, and a slice the user corrected in the predicted mask replaces it.

    Parameters
    ----------
    mask : (Y, X) or (Z, Y, X) ndarray
        The predicted mask after correction, in the annotation convention.
    corrected : iterable of int
        Slices of ``mask`` corrected by hand (``[0]`` for a 2D mask).
    original : ndarray, optional
        The original labels of the same shape, in either convention.

    Returns
    -------
    labels : ndarray of ``mask``'s shape, uint8
        Annotation labels; slices neither corrected nor annotated are 0 (ignored).

    Raises
    ------
    InputError
        When the shapes differ, a slice is outside the stack, the mask holds
        values other than 0, 1 and 2, or nothing is left to train on.
    """
    mask = np.asarray(mask)
    stack = mask[None] if mask.ndim == 2 else mask
    corrected = sorted({int(z) for z in corrected})
    outside = [z for z in corrected if not 0 <= z < len(stack)]
    if outside:
        raise InputError(f"corrected slices {outside} are outside the stack (0..{len(stack) - 1})")
    if original is None:
        merged = np.zeros(stack.shape, np.uint8)
    else:
        if np.shape(original) != mask.shape:
            raise InputError(f"original labels of shape {np.shape(original)} do not match the "
                             f"mask's {mask.shape}")
        merged = to_annotation(original).reshape(stack.shape)
    if corrected:
        fixed = stack[corrected]
        if not set(label_values(fixed).tolist()) <= {UNLABELLED, MEMBRANE, INTERIOR}:
            raise InputError("the corrected mask holds values other than 0 (not annotated), "
                             "1 (membrane) and 2 (interior)")
        merged[corrected] = fixed
    if not merged.any():
        raise InputError("nothing to train on: correct some slices of the mask (or choose the "
                         "original labels)")
    return merged.reshape(mask.shape)
