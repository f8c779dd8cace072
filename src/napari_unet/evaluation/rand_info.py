"""The foreground-restricted Rand and information scores of two segmentations.

The ISBI 2012 challenge (Arganda-Carreras et al. 2015, "Crowdsourcing the
creation of image segmentation algorithms for connectomics", Front. Neuroanat.
9:142, doi:10.3389/fnana.2015.00142) compares a proposal's segments, after
border thinning (`napari_unet.evaluation.segments`), with the true segments
over the ground truth's foreground, as Fiji's trainableSegmentation.metrics
does:

1. **Foreground-restricted table**: p_ij, the fraction of the ground truth's
   foreground pixels that lie in proposal segment i and true segment j; dam
   pixels inside the foreground count as one-pixel segments. s_i = sum_j p_ij
   and t_j = sum_i p_ij.
2. **Scores** (paper, section 2.3, alpha = 0.5):

   - V_rand_merge = sum_ij p_ij^2 / sum_i s_i^2 (Fiji's "precision": false
     merges lower it), V_rand_split = sum_ij p_ij^2 / sum_j t_j^2 (its
     "recall": false splits lower it), V_rand = their harmonic mean
     2 P R / (P + R) = sum p_ij^2 / (0.5 sum s_i^2 + 0.5 sum t_j^2);
   - V_info_merge = I(S;T) / H(T), V_info_split = I(S;T) / H(S), V_info their
     harmonic mean 2 I / (H(S) + H(T)), with H the entropy and I the mutual
     information of the proposal (S) and true (T) segment distributions. As in
     Fiji, a ground truth of one segment (H(T) = 0) gives merge 0, split 1; a
     proposal of one segment (H(S) = 0) gives merge 1, split 0; V_info is then
     0. Where I = 0 with both entropies positive, Fiji divides 0 by 0; we
     return 0.

Counts are kept as exact integers (pair counts in int64).
`napari_unet.evaluation.scores` scores whole predictions with these, slice by
slice and over thresholds.
"""

from typing import NamedTuple

import numpy as np

from napari_unet.errors import InputError
from napari_unet.evaluation.segments import check_same_shape


class Scores(NamedTuple):
    """A segmentation score with its merge and split parts.

    The order matches ``(score, precision, recall)``: the merge score plays the
    part of precision (false merges lower it), the split score that of recall
    (false splits lower it).
    """

    score: float
    merge: float
    split: float


def rand_scores(pred_segments: np.ndarray, true_segments: np.ndarray) -> Scores:
    """Return the foreground-restricted Rand scores (V_rand, merge, split).

    Arganda-Carreras et al. 2015, section 2.3.1, with alpha = 0.5; see the
    module docstring. Only pixels with a nonzero true label count; predicted
    label 0 marks one-pixel segments, as the challenge counts dam pixels. This
    is the score that ``1 - skimage.metrics.adapted_rand_error(true, pred)[0]``
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
    return rand_of_table(ContingencyTable.of(*_restrict(pred_segments, true_segments)))


def info_scores(pred_segments: np.ndarray, true_segments: np.ndarray) -> Scores:
    """Return the foreground-restricted information scores (V_info, merge, split).

    Arganda-Carreras et al. 2015, section 2.3.2, with alpha = 0.5; see the
    module docstring for the definitions, the foreground restriction and the
    cases of zero entropy. ``skimage.metrics.variation_of_information``
    returns the conditional entropies H(S|T), H(T|S) of the same table (in
    bits), whose sum is H(S) + H(T) - 2 I(S;T).

    Parameters
    ----------
    pred_segments, true_segments : (...) ndarray of int
        Non-negative segment labels of the same shape, prediction first.

    Returns
    -------
    scores : Scores
        ``(V_info, V_info_merge, V_info_split)``, each in [0, 1].

    Raises
    ------
    InputError
        When the shapes differ, labels are not non-negative integers, or the
        ground truth has no segment pixel.
    """
    return info_of_table(ContingencyTable.of(*_restrict(pred_segments, true_segments)))


class ContingencyTable(NamedTuple):
    """Pixel counts of the foreground-restricted contingency table (integers)."""

    joint: np.ndarray  # nonzero n_ij over proposal segments i > 0 and true segments j
    pred: np.ndarray  # nonzero s_i, proposal segments i > 0
    true: np.ndarray  # nonzero t_j
    singles: int  # foreground pixels on proposal label 0: one-pixel segments
    n: int  # foreground pixels

    @staticmethod
    def of(pred: np.ndarray, true: np.ndarray) -> "ContingencyTable":
        """Count the table of 1-D non-negative int64 labels, `true` all > 0."""
        on_segment = pred > 0
        singles = int(pred.size - np.count_nonzero(on_segment))
        pred, inner = _compact(pred[on_segment]), _compact(true[on_segment])
        true = _compact(true)
        rows = int(inner.max(initial=0)) + 1
        keys = pred * rows + inner
        if keys.size and (int(pred.max()) + 1) * rows <= 4 * keys.size + 65_536:
            joint = np.bincount(keys)
        else:
            joint = np.unique(keys, return_counts=True)[1]
        return ContingencyTable(
            joint=_nonzero(joint), pred=_nonzero(np.bincount(pred)),
            true=_nonzero(np.bincount(true)), singles=singles, n=int(true.size),
        )


def _restrict(pred_segments: np.ndarray, true_segments: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the labels of both over the true foreground, as 1-D int64."""
    pred = _as_labels(pred_segments, "pred_segments")
    true = _as_labels(true_segments, "true_segments")
    check_same_shape(pred, true, "pred_segments", "true_segments")
    foreground = true != 0
    if not foreground.any():
        raise InputError("true_segments has no segment pixel (all 0); nothing to score")
    return pred[foreground].astype(np.int64), true[foreground].astype(np.int64)


def rand_of_table(table: ContingencyTable) -> Scores:
    """Return the Rand F-score of a table, with its merge (precision) and split (recall)."""
    # Pair counts (n^2 times the sums of squared probabilities), exact in int64.
    # Each one-pixel segment adds 1 to the agreeing and to the proposal's pairs.
    agree = int(table.joint @ table.joint) + table.singles
    pred_pairs = int(table.pred @ table.pred) + table.singles
    true_pairs = int(table.true @ table.true)
    merge = agree / pred_pairs  # Fiji's precision, 1 exactly when no false merge
    split = agree / true_pairs  # Fiji's recall
    return Scores(score=_harmonic(merge, split), merge=merge, split=split)


def info_of_table(table: ContingencyTable) -> Scores:
    """Return the information-theoretic F-score of a table, with its merge and split terms."""
    # H = log n - sum c log c / n over the counts c; one-pixel segments add 0.
    n = table.n
    h_pred = _entropy(table.pred, n)
    h_true = _entropy(table.true, n)
    h_joint = _entropy(table.joint, n)
    mutual = h_pred + h_true - h_joint
    # Fiji's cases of zero entropy, told apart by segment counts rather than
    # by rounded entropies: one true segment gives merge 0 and split 1, but
    # one proposal segment (checked after it, so it wins) merge 1 and split 0.
    if len(table.pred) + table.singles == 1:
        merge, split = 1.0, 0.0
    elif len(table.true) == 1:
        merge, split = 0.0, 1.0
    else:
        merge, split = _clip(mutual / h_true), _clip(mutual / h_pred)
    return Scores(score=_harmonic(merge, split), merge=merge, split=split)


def _entropy(counts: np.ndarray, n: int) -> float:
    counts = counts.astype(np.float64)
    return float(np.log(n) - (counts @ np.log(counts)) / n)


def _harmonic(merge: float, split: float) -> float:
    # Fiji leaves 0 / 0 undefined (NaN); it arises only when both parts are 0.
    return 0.0 if merge + split <= 0 else _clip(2.0 * merge * split / (merge + split))


def _clip(value: float) -> float:
    return float(min(max(value, 0.0), 1.0))


def _nonzero(counts: np.ndarray) -> np.ndarray:
    return counts[counts > 0].astype(np.int64)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Return int64 labels, renumbered when their values would waste table rows."""
    labels = labels.astype(np.int64)
    if labels.size and labels.max() >= 2 * labels.size:
        values, labels = np.unique(labels, return_inverse=True)
        labels = labels + (values[0] != 0)  # keep 0 meaning 0
    return labels


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{name} must hold integer segment labels; got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise InputError(f"{name} holds negative labels; segment labels are 0 (boundary) or "
                         "positive")
    return array
