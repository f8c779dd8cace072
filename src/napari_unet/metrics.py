"""Segmentation scores of the ISBI 2012 challenge.

The challenge (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of
image segmentation algorithms for connectomics", Front. Neuroanat. 9:142,
doi:10.3389/fnana.2015.00142) scores a binary membrane map by three numbers:

- **pixel error**: the fraction of pixels whose membrane / not-membrane class
  differs from the ground truth (here over the annotated pixels only);
- **V_rand**: the foreground-restricted Rand F-score after border thinning;
- **V_info**: the foreground-restricted information-theoretic score after
  border thinning.

For the last two, each binary map becomes a segmentation: its membranes are
thinned to 1-pixel-wide, 8-connected lines and the segments are the
4-connected components of the remaining pixels (`segments_from_membrane`).
Let p_ij be the probability that a random pixel of the ground truth's
foreground (a pixel inside a true segment) lies in predicted segment i and true
segment j; s_i = sum_j p_ij and t_j = sum_i p_ij. Pixels of that foreground
that the prediction puts on a boundary count as one-pixel segments, as in the
challenge's scoring code (Fiji, trainableSegmentation.metrics). Then (paper,
section 2.3):

- V_rand_split = sum_ij p_ij^2 / sum_j t_j^2 (the pair recall: splits lower it),
  V_rand_merge = sum_ij p_ij^2 / sum_i s_i^2 (the pair precision: merges lower
  it), V_rand = sum_ij p_ij^2 / (0.5 sum_i s_i^2 + 0.5 sum_j t_j^2), the
  harmonic mean 2 P R / (P + R) of the two;
- V_info_split = I(S;T) / H(S), V_info_merge = I(S;T) / H(T),
  V_info = 2 I(S;T) / (H(S) + H(T)), with H the entropy and I the mutual
  information of the predicted (S) and true (T) segment distributions.

All scores lie in [0, 1], 1 being perfect.
"""

from typing import Any, NamedTuple

import numpy as np
from skimage.measure import label
from skimage.metrics import contingency_table
from skimage.morphology import skeletonize

from .errors import InputError
from .labels import MEMBRANE, UNLABELLED, annotated_slices, label_values, to_annotation

# Rows and columns of edge padding around a membrane map before thinning: a
# membrane crossing the image border continues straight into the padding, so
# the kinks that thinning leaves where a line meets the closing frame fall
# outside the image for membranes up to about twice this thick.
_PAD = 16

_SEGMENT_KEYS = ("v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split",
                 "v_info_merge")
_KEYS = ("pixel_error", *_SEGMENT_KEYS)


class Scores(NamedTuple):
    """A segmentation score with its merge and split parts.

    The order matches ``(score, precision, recall)``: the merge score plays the
    part of precision (false merges lower it), the split score that of recall
    (false splits lower it).
    """

    score: float
    merge: float
    split: float


def segments_from_membrane(
    membrane: np.ndarray, *, thin: bool = True, mask: np.ndarray | None = None
) -> np.ndarray:
    """Turn a binary membrane map into labelled segments, as the challenge scores it.

    With `thin`, the membranes are first thinned to 8-connected lines one pixel
    wide (`skimage.morphology.skeletonize`), so the width of a boundary does not
    change the score. Segments are 4-connected: a diagonal step in a 1-pixel
    line still separates the regions on either side of it, which 8-connectivity
    would join. The image border counts as boundary during thinning, so a
    membrane that meets the border keeps separating its two cells there.
    Thinning neither joins nor creates segments: pockets of former membrane
    that it cuts off from every cell stay boundary.

    Parameters
    ----------
    membrane : (Y, X) ndarray of bool
        True on membrane (boundary) pixels.
    thin : bool
        Thin the membranes to 1-pixel-wide lines first.
    mask : (Y, X) ndarray of bool, optional
        Pixels that may belong to a segment (for example the annotated ones);
        the others get label 0 and do not connect segments.

    Returns
    -------
    segments : (Y, X) ndarray of int
        0 on boundary pixels (and outside `mask`), 1..N on the N segments.

    Raises
    ------
    InputError
        When `membrane` is not a 2D binary map or `mask` has another shape.
    """
    membrane = _as_binary(membrane, "membrane")
    if membrane.ndim != 2:
        raise InputError(f"membrane has shape {membrane.shape}; expected one (Y, X) slice")
    if mask is None:
        mask = np.ones(membrane.shape, dtype=bool)
    else:
        mask = _as_binary(mask, "mask")
        _check_same_shape(mask, membrane, "mask", "membrane")
    boundary = _thin(membrane) if thin else membrane
    segments = label(~boundary & mask, connectivity=1)
    if thin:
        keep = np.zeros(segments.max() + 1, dtype=bool)
        keep[segments[~membrane & mask]] = True
        keep[0] = False
        segments = (np.cumsum(keep) * keep)[segments]
    return segments


def pixel_error(
    pred_membrane: np.ndarray, true_membrane: np.ndarray, *, mask: np.ndarray | None = None
) -> float:
    """Return the fraction of pixels whose membrane class is wrong.

    The challenge's pixel error for binary maps (Arganda-Carreras et al. 2015):
    the mean of ``pred_membrane != true_membrane`` over the pixels in `mask`.
    No thinning is applied.

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
    pred = _as_binary(pred_membrane, "pred_membrane")
    true = _as_binary(true_membrane, "true_membrane")
    _check_same_shape(pred, true, "pred_membrane", "true_membrane")
    if mask is None:
        mask = np.ones(true.shape, dtype=bool)
    else:
        mask = _as_binary(mask, "mask")
        _check_same_shape(mask, true, "mask", "true_membrane")
    counted = np.count_nonzero(mask)
    if counted == 0:
        raise InputError("pixel error needs at least one pixel to count; the mask is empty")
    return float(np.count_nonzero((pred != true) & mask) / counted)


def rand_scores(pred_segments: np.ndarray, true_segments: np.ndarray) -> Scores:
    """Return the foreground-restricted Rand scores (V_rand, merge, split).

    Arganda-Carreras et al. 2015, section 2.3.1, with alpha = 0.5; see the
    module docstring for the definitions. Only pixels with a nonzero true
    label count; predicted label 0 (boundary) marks one-pixel segments. This is
    the score that ``1 - skimage.metrics.adapted_rand_error(true, pred)[0]``
    approximates (scikit-image counts pairs of distinct pixels, treats label 0
    of the prediction as one segment, and returns the merge score in its recall
    slot, scikit-image issue #6485).

    Parameters
    ----------
    pred_segments, true_segments : (...) ndarray of int
        Non-negative segment labels of the same shape (note the order:
        prediction first, unlike scikit-image).

    Returns
    -------
    scores : Scores
        ``(V_rand, V_rand_merge, V_rand_split)``, each in [0, 1].

    Raises
    ------
    InputError
        When the shapes differ, labels are not non-negative integers, or the
        ground truth has no segment pixel.
    """
    joint, pred, true = _joint_distribution(pred_segments, true_segments)
    return _rand(joint, pred, true)


def info_scores(pred_segments: np.ndarray, true_segments: np.ndarray) -> Scores:
    """Return the foreground-restricted information scores (V_info, merge, split).

    Arganda-Carreras et al. 2015, section 2.3.2, with alpha = 0.5; see the
    module docstring for the definitions and `rand_scores` for the foreground
    restriction. ``skimage.metrics.variation_of_information`` returns the
    conditional entropies H(S|T), H(T|S) of the same table (in bits), whose sum
    is H(S) + H(T) - 2 I(S;T).

    Parameters
    ----------
    pred_segments, true_segments : (...) ndarray of int
        Non-negative segment labels of the same shape, prediction first.

    Returns
    -------
    scores : Scores
        ``(V_info, V_info_merge, V_info_split)``, each in [0, 1]; a ratio whose
        entropies are all 0 (a single segment on each side) counts as 1.

    Raises
    ------
    InputError
        When the shapes differ, labels are not non-negative integers, or the
        ground truth has no segment pixel.
    """
    joint, pred, true = _joint_distribution(pred_segments, true_segments)
    return _info(joint, pred, true)


def evaluate(prediction: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5) -> dict:
    """Score a prediction against annotation labels as the ISBI 2012 challenge does.

    Per annotated slice: `pixel_error` over the annotated pixels, and the
    thinned, foreground-restricted `rand_scores` and `info_scores` of the
    segments of both membrane maps (`segments_from_membrane`). Where the truth
    is partly annotated, its segments are the 4-connected components of its
    annotated non-membrane pixels after thinning, so two scribbles in one cell
    count as two cells: on sparse annotation the segment scores are a rough
    guide. Slices without annotation are skipped; a stack's scores are the
    means of its slices' scores. The challenge reports the best score over
    thresholds; this uses the one threshold given.

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
    prediction = np.asarray(prediction)
    truth = np.asarray(truth)
    if prediction.shape != truth.shape:
        raise InputError(
            f"prediction shape {prediction.shape} differs from truth shape {truth.shape}"
        )
    if truth.ndim not in (2, 3):
        raise InputError(f"truth has shape {truth.shape}; expected (Y, X) or (Z, Y, X)")
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"threshold {threshold} is not a probability in [0, 1]")
    membrane = _prediction_membrane(prediction, threshold)
    truth = to_annotation(truth)
    slices = annotated_slices(truth)
    if not slices:
        raise InputError("truth holds no annotated pixel (all 0); nothing to evaluate")
    if truth.ndim == 2:
        membrane, truth = membrane[None], truth[None]
    per_slice = [{"slice": z, **_evaluate_slice(membrane[z], truth[z])} for z in slices]
    means = {key: _mean([scores[key] for scores in per_slice]) for key in _KEYS}
    return {**means, "slices": slices, "per_slice": per_slice}


def _evaluate_slice(membrane: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    annotated = truth != UNLABELLED
    true_membrane = truth == MEMBRANE
    scores: dict[str, float | None] = {
        "pixel_error": pixel_error(membrane, true_membrane, mask=annotated)
    }
    true_segments = segments_from_membrane(true_membrane, mask=annotated)
    if not true_segments.any():
        return {**scores, **dict.fromkeys(_SEGMENT_KEYS)}
    joint, pred, true = _joint_distribution(segments_from_membrane(membrane), true_segments)
    rand, info = _rand(joint, pred, true), _info(joint, pred, true)
    return {
        **scores,
        "v_rand": rand.score, "v_rand_split": rand.split, "v_rand_merge": rand.merge,
        "v_info": info.score, "v_info_split": info.split, "v_info_merge": info.merge,
    }


def _prediction_membrane(prediction: np.ndarray, threshold: float) -> np.ndarray:
    if prediction.dtype == bool:
        return prediction
    if np.issubdtype(prediction.dtype, np.floating):
        if not np.isfinite(prediction).all():
            raise InputError("prediction contains NaN or inf values")
        low, high = float(prediction.min()), float(prediction.max())
        if low < 0.0 or high > 1.0:
            raise InputError(
                f"prediction values span [{low:g}, {high:g}]; float predictions are membrane "
                "probabilities in [0, 1]"
            )
        return prediction > threshold
    if not np.issubdtype(prediction.dtype, np.integer):
        raise InputError(f"prediction has dtype {prediction.dtype}; expected probabilities "
                         "or annotation labels")
    extra = sorted(set(label_values(prediction).tolist()) - {0, 1, 2})
    if extra:
        raise InputError(
            f"prediction label values {extra[:5]} are not annotation labels (1 = membrane, "
            "2 = interior); convert an exported mask with labels.mask_to_annotation first"
        )
    return prediction == MEMBRANE


def _thin(membrane: np.ndarray) -> np.ndarray:
    # The closing frame of membrane stops thinning from retracting a line's
    # end away from the border, which would join the cells on its two sides.
    padded = np.pad(membrane, _PAD, mode="edge")
    padded = np.pad(padded, 1, constant_values=True)
    inner = slice(_PAD + 1, -_PAD - 1)
    return skeletonize(padded)[inner, inner]


def _joint_distribution(
    pred_segments: np.ndarray, true_segments: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the nonzero p_ij and the marginals s_i, t_j over the true foreground."""
    pred = _as_labels(pred_segments, "pred_segments")
    true = _as_labels(true_segments, "true_segments")
    _check_same_shape(pred, true, "pred_segments", "true_segments")
    foreground = true != 0
    if not foreground.any():
        raise InputError("true_segments has no segment pixel (all 0); nothing to score")
    true = _compact(true[foreground])
    pred = _compact(pred[foreground])
    # Predicted boundary pixels inside a true segment are one-pixel segments.
    boundary = pred == 0
    pred[boundary] = pred.max() + 1 + np.arange(np.count_nonzero(boundary))
    table = contingency_table(true, pred, normalize=True, sparse_type="array")
    joint = table.data[table.data > 0]
    true_marginal = np.asarray(table.sum(axis=1)).ravel()
    pred_marginal = np.asarray(table.sum(axis=0)).ravel()
    return joint, pred_marginal[pred_marginal > 0], true_marginal[true_marginal > 0]


def _rand(joint: np.ndarray, pred: np.ndarray, true: np.ndarray) -> Scores:
    agree = float(joint @ joint)
    pred_pairs, true_pairs = float(pred @ pred), float(true @ true)
    return Scores(
        score=_ratio(agree, 0.5 * pred_pairs + 0.5 * true_pairs),
        merge=_ratio(agree, pred_pairs),
        split=_ratio(agree, true_pairs),
    )


def _info(joint: np.ndarray, pred: np.ndarray, true: np.ndarray) -> Scores:
    h_pred, h_true = _entropy(pred), _entropy(true)
    mutual = max(h_pred + h_true - _entropy(joint), 0.0)
    return Scores(
        score=_ratio(2.0 * mutual, h_pred + h_true),
        merge=_ratio(mutual, h_true),
        split=_ratio(mutual, h_pred),
    )


def _entropy(probabilities: np.ndarray) -> float:
    return float(-(probabilities @ np.log(probabilities)))


def _ratio(numerator: float, denominator: float) -> float:
    # 0/0 arises only when nothing can be split or merged: a perfect score.
    if denominator <= 1e-12:
        return 1.0
    return float(min(max(numerator / denominator, 0.0), 1.0))


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _compact(labels: np.ndarray) -> np.ndarray:
    """Return int64 labels, renumbered when their values would waste table rows."""
    labels = labels.astype(np.int64)
    if labels.size and labels.max() >= labels.size:
        values, labels = np.unique(labels, return_inverse=True)
        labels = labels + (values[0] != 0)  # keep 0 meaning 0
    return labels


def _as_binary(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.number) and set(label_values(array).tolist()) <= {0, 1}:
        return array != 0
    raise InputError(f"{name} must be a binary map (bool, or 0 and 1); got dtype {array.dtype}")


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must hold integer segment labels; got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise InputError(f"{name} holds negative labels; segment labels are 0 (boundary) or "
                         "positive")
    return array


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{name_a} shape {a.shape} differs from {name_b} shape {b.shape}")
