"""Segmentation scores of the ISBI 2012 challenge, as its official script computes them.

The challenge (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of
image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
doi:10.3389/fnana.2015.00142) ranks a membrane map by two numbers, V_rand and
V_info, each the best over a sweep of thresholds. The organisers' scoring code
is Fiji's trainableSegmentation.metrics (``RandError.getMaximalVRandAfterThinning``
and ``VariationOfInformation.getMaximalVInfoAfterThinning``, called by the
challenge's evaluation script with thresholds 0.0, 0.1, ..., 1.0 and per-slice
averaging). This module is our own implementation of that definition, in
numpy, scipy and numba, with the border thinning in
`napari_unet.evaluation.segments` and the segment scores in
`napari_unet.evaluation.rand_info`; docs/metrics.md walks through it step by
step. Per slice and threshold:

1. **Binarise.** The ground truth's foreground is its cell interior; its
   membrane is background and is *not* thinned. The proposal's cells are the
   pixels that are not membrane at the threshold.
2. **Ground-truth segments**: the 4-connected components of the foreground.
3. **Proposal segments, after border thinning**: the 4-connected components of
   the proposal's cells are the basins of a watershed flood of its membrane
   (Vincent and Soille's algorithm on the two-level image, 4-connectivity).
   Each membrane pixel takes the basin that reaches it first in a
   breadth-first flood; a pixel reached by two basins is a dam, a line about
   one pixel wide (`segments.segments_from_membrane`). The membrane is thus split
   between the cells on its two sides, and only the dams stay boundary. A map
   without any cell pixel is one segment.
4. **Foreground-restricted table** of the proposal's and the true segments
   over the ground truth's foreground; dam pixels inside the foreground count
   as one-pixel segments.
5. **Scores** (paper, section 2.3, alpha = 0.5): V_rand and V_info, each the
   harmonic mean of a merge and a split part, from that table
   (`napari_unet.evaluation.rand_info`, whose docstring gives the formulas
   and Fiji's cases of zero entropy).
6. **Stack and sweep**: a stack's score is the mean of its slices' scores, and
   the challenge reports, for V_rand and for V_info separately, the best mean
   over the thresholds (`evaluate_thresholds`).

Conventions of this package, and how they map to the challenge's:

- **Threshold direction.** Our predictions are P(membrane) in [0, 1]; a pixel
  is membrane where P(membrane) > t. The challenge's proposals are
  P(cell) = 1 - P(membrane) (the same convention as its label images, white
  cells), a pixel being a cell where P(cell) > t'. Both sweep the same grid
  {0, 0.1, ..., 1} (t = 1 - t'); they differ only on pixels whose value equals
  a threshold exactly (there we say cell, the challenge says membrane), which
  matters mostly at t = 1 for saturated probabilities (docs/metrics.md).
- **Unannotated pixels are ignored** (our extension: the challenge's labels are
  complete). Truth labels are 0 = not annotated, 1 = membrane, 2 = interior;
  the foreground is the annotated interior, so unannotated pixels neither count
  nor connect true segments. On a complete annotation this is exactly the
  challenge's foreground restriction.
- **Pixel error** (Fiji's ``PixelError.getMetricValue``): the fraction of
  pixels whose membrane / not-membrane class differs from the truth, here over
  the annotated pixels; no thinning. The 2016 official script does not report
  it.

All scores lie in [0, 1]; 1 is perfect for V_rand and V_info, 0 for the pixel
error.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage as ndi

from napari_unet.errors import InputError
from napari_unet.evaluation.rand_info import ContingencyTable, info_of_table, rand_of_table
from napari_unet.evaluation.segments import (
    FOUR_NEIGHBOURS,
    as_binary,
    check_same_shape,
    flood_membrane,
)
from napari_unet.io.labels import (
    INTERIOR,
    MEMBRANE,
    UNLABELLED,
    annotated_slices,
    label_values,
    to_annotation,
)

CHALLENGE_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(11))
"""The challenge's sweep, 0.0, 0.1, ..., 1.0, here on P(membrane) (membrane where > t)."""

_SEGMENT_KEYS = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split",
                 "v_info_merge")
_KEYS = ("pixel_error", *_SEGMENT_KEYS)


class _Truth(NamedTuple):
    """One annotated slice of the ground truth, ready to score proposals against."""

    annotated: np.ndarray  # (Y, X) bool
    membrane: np.ndarray  # (Y, X) bool
    foreground: np.ndarray  # (F,) flat indices of the annotated interior
    segments: np.ndarray  # (F,) int64 true segment (1..N) of each foreground pixel


def pixel_error(
    pred_membrane: np.ndarray, true_membrane: np.ndarray, *, mask: np.ndarray | None = None
) -> float:
    """Return the fraction of pixels whose membrane class is wrong.

    Fiji's ``PixelError.getMetricValue`` for binary maps: the mean of
    ``pred_membrane != true_membrane`` over the pixels in `mask`. No thinning
    is applied.

    Parameters
    ----------
    pred_membrane, true_membrane : ndarray of bool
        Predicted and true membrane maps of the same shape.
    mask : ndarray of bool, optional
        The pixels to count (for example the annotated ones); all by default.

    Returns
    -------
    error : float
        In [0, 1]; 0 is perfect.

    Raises
    ------
    InputError
        When the shapes differ, an input is not binary, or no pixel is counted.
    """
    pred = as_binary(pred_membrane, "pred_membrane")
    true = as_binary(true_membrane, "true_membrane")
    check_same_shape(pred, true, "pred_membrane", "true_membrane")
    if mask is None:
        mask = np.ones(true.shape, dtype=bool)
    else:
        mask = as_binary(mask, "mask")
        check_same_shape(mask, true, "mask", "true_membrane")
    counted = np.count_nonzero(mask)
    if counted == 0:
        raise InputError("pixel error needs at least one pixel to count; the mask is empty")
    return float(np.count_nonzero((pred != true) & mask) / counted)


def evaluate(prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5) -> dict:
    """Score a prediction against annotation labels at one threshold, as the challenge does.

    Per annotated slice: `pixel_error` over the annotated pixels, and the
    foreground-restricted `rand_info.rand_scores` and `rand_info.info_scores`
    of the thinned proposal (`segments.segments_from_membrane`) against the
    true segments, the 4-connected components of the annotated interior (not
    thinned). Where the truth is partly annotated, two scribbles in one cell
    count as two cells: on sparse annotation the segment scores are a rough
    guide. Slices without annotation are skipped; a stack's scores are the
    means of its slices' scores. The challenge reports the best mean over
    thresholds (`evaluate_thresholds`); this uses the one threshold given.

    Parameters
    ----------
    prediction : (Y, X) or (Z, Y, X) ndarray
        Membrane probabilities (float in [0, 1], P(membrane); membrane where
        above `threshold`), annotation labels (integers, 1 = membrane), or a
        boolean membrane map.
    truth : (Y, X) or (Z, Y, X) ndarray
        Annotation labels (0 = not annotated, 1 = membrane, 2 = interior) or
        ISBI labels (0 = membrane, 255 = interior), same shape as `prediction`.
    threshold : float
        Probability above which a pixel is membrane; ignored for labels.

    Returns
    -------
    scores : dict
        JSON-serialisable: ``pixel_error``, ``v_rand``, ``v_rand_merge``,
        ``v_rand_split``, ``v_info``, ``v_info_merge``, ``v_info_split`` (floats,
        means over the evaluated slices), ``slices`` (their indices; ``[0]`` for
        a 2D image) and ``per_slice`` (one dict of the same scores per slice,
        with its ``slice`` index). A segment score is None for a slice whose
        truth has no segment pixel, and None overall when no slice has one.

    Raises
    ------
    InputError
        When the shapes differ, the inputs are not (Y, X) or (Z, Y, X), the
        values fit no convention, or the truth holds no annotation.
    """
    _check_threshold(threshold)
    membrane_at, truths, slices = _prepare(prediction, truth)
    return _evaluate_at(membrane_at(threshold), truths, slices)


def evaluate_thresholds(
    prediction: np.ndarray,
    truth: np.ndarray,
    thresholds: Sequence[float] = CHALLENGE_THRESHOLDS,
) -> dict:
    """Score a prediction at every threshold and take the challenge's best.

    The challenge's ranking scores (``getMaximalVRandAfterThinning`` and
    ``getMaximalVInfoAfterThinning`` in Fiji): `evaluate` at each threshold,
    then the largest stack mean of V_rand and, separately, of V_info, each
    with the threshold that reached it (the first of `thresholds` on a tie).
    A pixel is membrane where P(membrane) > threshold; the default sweep
    0.0, 0.1, ..., 1.0 is the challenge's (see the module docstring for how it
    maps to the challenge's P(cell) > t'). The truth is prepared once, so a
    sweep costs little more than the thinning of each thresholded map.

    Parameters
    ----------
    prediction : (Y, X) or (Z, Y, X) ndarray
        As for `evaluate`; for labels or a boolean map every threshold gives
        the same scores.
    truth : (Y, X) or (Z, Y, X) ndarray
        As for `evaluate`.
    thresholds : sequence of float
        Thresholds in [0, 1], in the order to try them.

    Returns
    -------
    scores : dict
        JSON-serialisable: ``thresholds`` (as given), ``per_threshold`` (per
        threshold, the dict of `evaluate` with its ``threshold``),
        ``v_rand_max`` and ``v_rand_threshold``, ``v_info_max`` and
        ``v_info_threshold``, ``pixel_error_min`` and ``pixel_error_threshold``
        (the best mean and where it was reached; None for a segment score when
        no slice has a true segment), and ``slices``.

    Raises
    ------
    InputError
        As for `evaluate`, or when `thresholds` is empty or holds a value
        outside [0, 1].
    """
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise InputError("thresholds is empty; give at least one threshold in [0, 1]")
    for threshold in thresholds:
        _check_threshold(threshold)
    membrane_at, truths, slices = _prepare(prediction, truth)
    per_threshold = [{"threshold": t, **_evaluate_at(membrane_at(t), truths, slices)}
                     for t in thresholds]
    result: dict[str, Any] = {"thresholds": thresholds, "per_threshold": per_threshold}
    for key, best, name in (("v_rand", max, "v_rand_max"), ("v_info", max, "v_info_max"),
                            ("pixel_error", min, "pixel_error_min")):
        scored = [(s[key], s["threshold"]) for s in per_threshold if s[key] is not None]
        value = best((v for v, _ in scored), default=None)
        result[name] = value
        result[f"{key}_threshold"] = next((t for v, t in scored if v == value), None)
    result["slices"] = slices
    return result


def _prepare(
    prediction: np.ndarray, truth: np.ndarray
) -> tuple[Callable[[float], np.ndarray], dict[int, _Truth], list[int]]:
    """Check the inputs; return a thresholding function, the truth by slice, the slices."""
    prediction = np.asarray(prediction)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise InputError(
            f"prediction shape {prediction.shape} differs from truth shape {truth.shape}"
        )
    if truth.ndim not in (2, 3):
        raise InputError(f"truth has shape {truth.shape}; expected (Y, X) or (Z, Y, X)")
    membrane_at = _membrane_function(prediction)
    truth = to_annotation(truth)
    slices = annotated_slices(truth)
    if not slices:
        raise InputError("truth holds no annotated pixel (all 0); nothing to evaluate")
    stack = truth[None] if truth.ndim == 2 else truth
    return membrane_at, {z: _prepare_truth(stack[z]) for z in slices}, slices


def _prepare_truth(truth: np.ndarray) -> _Truth:
    annotated = truth != UNLABELLED
    # The challenge does not thin the ground truth: its membrane is background.
    segments = ndi.label(truth == INTERIOR, FOUR_NEIGHBOURS)[0].ravel()
    foreground = np.flatnonzero(segments)
    return _Truth(annotated, truth == MEMBRANE, foreground, segments[foreground].astype(np.int64))


def _evaluate_at(membrane: np.ndarray, truths: dict[int, _Truth], slices: list[int]) -> dict:
    stack = membrane[None] if membrane.ndim == 2 else membrane
    per_slice = [{"slice": z, **_score_slice(stack[z], truths[z])} for z in slices]
    means = {key: _mean([scores[key] for scores in per_slice]) for key in _KEYS}
    return {**means, "slices": slices, "per_slice": per_slice}


def _score_slice(membrane: np.ndarray, truth: _Truth) -> dict[str, float | None]:
    scores: dict[str, float | None] = {
        "pixel_error": pixel_error(membrane, truth.membrane, mask=truth.annotated)
    }
    if not truth.foreground.size:
        return {**scores, **dict.fromkeys(_SEGMENT_KEYS)}
    proposal = flood_membrane(membrane).ravel()[truth.foreground]
    table = ContingencyTable.of(proposal.astype(np.int64), truth.segments)
    rand, info = rand_of_table(table), info_of_table(table)
    return {
        **scores,
        "v_rand": rand.score, "v_rand_split": rand.split, "v_rand_merge": rand.merge,
        "v_info": info.score, "v_info_split": info.split, "v_info_merge": info.merge,
    }


def _membrane_function(prediction: np.ndarray) -> Callable[[float], np.ndarray]:
    """Check a prediction once; return a function from threshold to membrane map."""
    if prediction.dtype == bool:
        return lambda threshold: prediction
    if np.issubdtype(prediction.dtype, np.floating):
        if not np.isfinite(prediction).all():
            raise InputError("prediction contains NaN or inf values")
        low, high = float(prediction.min()), float(prediction.max())
        if low < 0.0 or high > 1.0:
            raise InputError(
                f"prediction values span [{low:g}, {high:g}]; float predictions are membrane "
                "probabilities in [0, 1]"
            )
        return lambda threshold: prediction > threshold
    if not np.issubdtype(prediction.dtype, np.integer):
        raise InputError(f"prediction has dtype {prediction.dtype}; expected probabilities "
                         "or annotation labels")
    extra = sorted(set(label_values(prediction).tolist()) - {0, 1, 2})
    if extra:
        raise InputError(
            f"prediction label values {extra[:5]} are not annotation labels (1 = membrane, "
            "2 = interior); convert an exported mask with labels.mask_to_annotation first"
        )
    membrane = prediction == MEMBRANE
    return lambda threshold: membrane


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is not a probability in [0, 1]")


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
