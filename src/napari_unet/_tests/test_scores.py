import json
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_unet.errors import InputError
from napari_unet.evaluation.rand_info import info_scores, rand_scores
from napari_unet.evaluation.scores import (
    CHALLENGE_THRESHOLDS,
    evaluate,
    evaluate_thresholds,
    pixel_error,
)
from napari_unet.io.labels import INTERIOR, MEMBRANE
from napari_unet.io.sample import isbi2012

SCORE_KEYS = ("pixel_error", "v_rand", "v_rand_split", "v_rand_merge", "v_info", "v_info_split",
              "v_info_merge")


@pytest.fixture(scope="module")
def isbi_labels():
    return isbi2012()[1][:2]


def annotation(membrane):
    return np.where(membrane, MEMBRANE, INTERIOR).astype(np.uint8)


def two_cells(line_cols=(5,), size=12):
    """A size x size annotation with full-height membrane lines at the given columns."""
    membrane = np.zeros((size, size), dtype=bool)
    membrane[:, list(line_cols)] = True
    return annotation(membrane)


# --- Rand and information scores on literal segmentations -------------------------------------

def test_rand_scores_of_a_merge():
    true = np.array([1, 1, 2, 2, 3, 3])
    pred = np.array([1, 1, 1, 1, 3, 3])  # true segments 1 and 2 merged
    # n_ij: (1,1)=2, (2,1)=2, (3,3)=2 -> sum n_ij^2 = 12; true sizes 2,2,2 -> sum t^2 = 12;
    # predicted sizes 4,2 -> sum s^2 = 20. merge = 12/20, split = 12/12,
    # V_rand = 12 / (0.5*20 + 0.5*12) = 0.75 = 2PR/(P+R).
    score, merge, split = rand_scores(pred, true)
    assert merge == pytest.approx(0.6)
    assert split == pytest.approx(1.0)
    assert score == pytest.approx(0.75)
    assert score == pytest.approx(2 * merge * split / (merge + split))


def test_rand_scores_of_a_split():
    true = np.array([1, 1, 1, 1, 3, 3])
    pred = np.array([1, 1, 2, 2, 3, 3])  # true segment 1 split in two
    # The same table transposed: merge = 12/12, split = 12/20, V_rand = 0.75.
    score, merge, split = rand_scores(pred, true)
    assert (score, merge, split) == pytest.approx((0.75, 1.0, 0.6))


def test_info_scores_of_a_merge_and_a_split():
    # Merge: T = three cells of 1/3 each, S = {2/3, 1/3}; S,T jointly has three cells of 1/3.
    # H(T) = ln 3, H(S) = ln 3 - (2/3) ln 2, H(S,T) = ln 3, so I = H(S) + H(T) - H(S,T) = H(S).
    h_t, h_s = math.log(3), math.log(3) - 2 / 3 * math.log(2)
    score, merge, split = info_scores(np.array([1, 1, 1, 1, 2, 2]), np.array([1, 1, 2, 2, 3, 3]))
    assert split == pytest.approx(1.0)  # I / H(S)
    assert merge == pytest.approx(h_s / h_t)  # I / H(T) = 0.5794
    assert score == pytest.approx(2 * h_s / (h_s + h_t))  # 0.7337
    # The split is the mirror image: I / H(S) drops, I / H(T) stays 1.
    score, merge, split = info_scores(np.array([1, 1, 2, 2, 3, 3]), np.array([1, 1, 1, 1, 2, 2]))
    assert (merge, split) == pytest.approx((1.0, h_s / h_t))
    assert score == pytest.approx(2 * h_s / (h_s + h_t))


def test_predicted_boundary_pixels_are_one_pixel_segments():
    true = np.array([1, 1, 2, 2])
    pred = np.zeros(4, dtype=int)
    # Four singletons: sum n_ij^2 = 4 = sum s^2, sum t^2 = 8 -> merge 1, split 1/2, V_rand 2/3.
    # (Label 0 as one segment would instead give merge 1/2, split 1.)
    assert rand_scores(pred, true) == pytest.approx((2 / 3, 1.0, 0.5))
    # H(S) = ln 4, H(T) = ln 2, I = ln 2 -> V_info = 2 ln 2 / ln 8 = 2/3.
    assert info_scores(pred, true) == pytest.approx((2 / 3, 1.0, 0.5))


def test_true_background_is_ignored_and_label_values_do_not_matter():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([5, 9, 7, 7, 3, 3])
    assert rand_scores(pred, true) == pytest.approx((1.0, 1.0, 1.0))
    assert info_scores(pred, true) == pytest.approx((1.0, 1.0, 1.0))


def test_single_segment_information_scores_follow_fiji():
    # H(T) = 0 (one true segment): merge I/H(T) is taken as 0, split as 1 -> V_info 0;
    # H(S) = 0 (one proposal segment): merge 1, split 0, which wins when both are 0,
    # so even a perfect one-segment proposal scores V_info 0.
    one = np.array([1, 1, 1, 1])
    assert info_scores(np.array([1, 1, 2, 2]), one) == (0.0, 0.0, 1.0)
    assert info_scores(one, np.array([1, 1, 2, 2])) == (0.0, 1.0, 0.0)
    assert info_scores(one, one) == (0.0, 1.0, 0.0)
    # A lone one-pixel segment is one proposal segment too (H(S) = 0).
    assert info_scores(np.array([0]), np.array([3])) == (0.0, 1.0, 0.0)
    # Rand has no such case: one segment on both sides agrees perfectly.
    assert rand_scores(one, one) == (1.0, 1.0, 1.0)


def test_scores_agree_with_scikit_image():
    rows, cols = np.indices((96, 96))
    true = 1 + (rows // 16) * 6 + cols // 16  # 36 square cells
    true[:, 40:44] = 0  # a strip outside the true foreground
    pred = 1 + (rows // 16) * 3 + (cols + 8) // 32  # shifted, wider cells: merges and splits
    v_rand, merge, split = rand_scores(pred, true)
    assert 0.2 < v_rand < 0.9
    # scikit-image counts pairs of distinct pixels (tiny difference) and returns the
    # split score as "precision", the merge score as "recall" (its issue #6485).
    are, sk_precision, sk_recall = adapted_rand_error(true, pred)
    assert 1 - are == pytest.approx(v_rand, abs=2e-3)
    assert (sk_recall, sk_precision) == pytest.approx((merge, split), abs=2e-3)
    # variation_of_information gives H(S|T) + H(T|S) = H(S) + H(T) - 2 I in bits.
    foreground = true > 0

    def entropy(segments):
        p = np.bincount(segments[foreground]) / foreground.sum()
        p = p[p > 0]
        return -(p * np.log(p)).sum()

    h_sum = entropy(pred) + entropy(true)
    vi = variation_of_information(true, pred, ignore_labels=[0]).sum() * math.log(2)
    assert info_scores(pred, true).score == pytest.approx(1 - vi / h_sum)


# --- pixel error ------------------------------------------------------------------------------

def test_pixel_error_counts_wrong_pixels_inside_the_mask():
    pred = np.array([[1, 0], [1, 1]], dtype=bool)
    true = np.array([[1, 0], [0, 1]], dtype=bool)
    assert pixel_error(pred, true) == 0.25
    assert pixel_error(pred, true, mask=np.array([[1, 1], [0, 1]], dtype=bool)) == 0.0
    assert pixel_error(pred, true, mask=np.array([[0, 1], [1, 1]], dtype=bool)) == pytest.approx(
        1 / 3
    )


def test_pixel_error_needs_binary_maps():
    with pytest.raises(InputError, match="binary"):
        pixel_error(np.full((2, 2), 0.7), np.zeros((2, 2), dtype=bool))


# --- evaluate ---------------------------------------------------------------------------------

def test_perfect_prediction_on_an_isbi_slice(isbi_labels):
    result = evaluate(isbi_labels[0], isbi_labels[0])
    assert result["pixel_error"] == 0.0
    assert result["v_rand"] == pytest.approx(1.0)
    assert result["v_info"] == pytest.approx(1.0)
    assert result["slices"] == [0]


@pytest.mark.parametrize(
    ("pred_lines", "expected"),
    [
        # Truth: 12 x 12, line at column 5 -> cells of 60 and 72 pixels.
        # Removed line: one predicted cell of 132 -> sum s^2 = 17424, sum t^2 = 8784 = sum n^2;
        # V_rand = 8784 / 13104, V_info = 0 (I = 0); 12 wrong pixels.
        ((), {"v_rand": 8784 / 13104, "v_rand_merge": 8784 / 17424, "v_rand_split": 1.0,
              "v_info": 0.0, "pixel_error": 12 / 144}),
        # Added line at column 8: predicted cells 60, 24, 36 and 12 boundary singletons inside
        # the 72-pixel cell -> sum n^2 = sum s^2 = 5484, sum t^2 = 8784.
        ((5, 8), {"v_rand": 5484 / 7134, "v_rand_merge": 1.0, "v_rand_split": 5484 / 8784,
                  "pixel_error": 12 / 144}),
        # Line shifted to column 6: 60 | 12 singletons + 60 -> sum n^2 = 7212 = sum s^2.
        ((6,), {"v_rand": 7212 / 7998, "v_rand_merge": 1.0, "v_rand_split": 7212 / 8784,
                "pixel_error": 24 / 144}),
    ],
)
def test_wrong_boundaries_score_below_one(pred_lines, expected):
    result = evaluate(two_cells(pred_lines), two_cells((5,)))
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key
    assert result["v_rand"] < 1 and result["v_info"] < 1


def test_thick_predicted_boundary_scores_like_a_thin_one():
    truth = two_cells((5,))
    result = evaluate(two_cells((4, 5, 6)), truth)
    assert result["v_rand"] == pytest.approx(1.0)
    assert result["v_info"] == pytest.approx(1.0)
    assert result["pixel_error"] == pytest.approx(24 / 144)  # no thinning for pixel error


def test_dams_on_true_membrane_cost_nothing_dams_in_cells_are_one_pixel_segments():
    # The truth is not thinned: its membrane (columns 4-6) is outside the foreground.
    truth = two_cells((4, 5, 6))  # cells: columns 0-3 (48 px), 7-11 (60 px); n = 108
    for line in (4, 5, 6):
        result = evaluate(two_cells((line,)), truth)
        assert (result["v_rand"], result["v_info"]) == (1.0, 1.0), line
    # A line at column 3 runs through the left cell: its 12 dam pixels are one-pixel
    # segments. n_ij: 36 (columns 0-2), 60 (right cell), 12 singletons ->
    # sum n_ij^2 = 1296 + 3600 + 12 = 4908 = sum s_i^2; sum t_j^2 = 48^2 + 60^2 = 5904.
    result = evaluate(two_cells((3,)), truth)
    assert result["v_rand_merge"] == 1.0
    assert result["v_rand_split"] == pytest.approx(4908 / 5904)
    assert result["v_rand"] == pytest.approx(4908 / (0.5 * 4908 + 0.5 * 5904))  # 0.9079
    # Every proposal segment lies in one true segment: I = H(T), merge 1, split H(T)/H(S).
    h_t = -(48 / 108 * math.log(48 / 108) + 60 / 108 * math.log(60 / 108))
    h_s = math.log(108) - (36 * math.log(36) + 60 * math.log(60)) / 108
    assert result["v_info_merge"] == pytest.approx(1.0)
    assert result["v_info_split"] == pytest.approx(h_t / h_s)


def test_predicted_membrane_inside_a_cell_joins_the_cell():
    truth = two_cells((5,))
    prediction = two_cells((5,))
    prediction[3:5, 8:10] = MEMBRANE  # a 2 x 2 speck in the right cell
    result = evaluate(prediction, truth)
    # The flood hands the speck to the cell around it: no one-pixel segments.
    assert (result["v_rand"], result["v_info"]) == (1.0, 1.0)
    assert result["pixel_error"] == pytest.approx(4 / 144)


def test_position_of_the_dam_in_an_even_band_decides_the_score():
    prediction = np.full((6, 10), INTERIOR, dtype=np.uint8)
    prediction[:, 4:6] = MEMBRANE  # dam on column 5, column 4 joins the left cell
    truth_at_5 = np.full((6, 10), INTERIOR, dtype=np.uint8)
    truth_at_5[:, 5] = MEMBRANE
    assert evaluate(prediction, truth_at_5)["v_rand"] == 1.0
    truth_at_4 = np.full((6, 10), INTERIOR, dtype=np.uint8)
    truth_at_4[:, 4] = MEMBRANE  # true cells: columns 0-3 (24 px), 5-9 (30 px); n = 54
    result = evaluate(prediction, truth_at_4)
    # n_ij: 24 (left), 24 (columns 6-9), and the dam's 6 pixels on column 5 as
    # one-pixel segments: sum n_ij^2 = 576 + 576 + 6 = 1158 = sum s_i^2;
    # sum t_j^2 = 24^2 + 30^2 = 1476. V_rand = 1158 / (0.5 * 1158 + 0.5 * 1476) = 0.8793.
    assert result["v_rand_merge"] == 1.0
    assert result["v_rand_split"] == pytest.approx(1158 / 1476)
    assert result["v_rand"] == pytest.approx(1158 / 1317)
    h_t = -(24 / 54 * math.log(24 / 54) + 30 / 54 * math.log(30 / 54))
    h_s = math.log(54) - 2 * 24 * math.log(24) / 54
    assert result["v_info"] == pytest.approx(2 * h_t / (h_t + h_s))
    assert result["pixel_error"] == pytest.approx(6 / 60)  # column 5


def test_only_annotated_pixels_are_scored():
    truth = two_cells((5,))
    truth[:, 9:] = 0  # not annotated
    prediction = two_cells((5, 10))  # wrong only where the truth is not annotated
    result = evaluate(prediction, truth)
    assert result["pixel_error"] == 0.0
    assert result["v_rand"] == pytest.approx(1.0)
    assert result["v_info"] == pytest.approx(1.0)
    prediction[0, 0] = MEMBRANE  # one wrong annotated pixel out of 12 * 9
    assert evaluate(prediction, truth)["pixel_error"] == pytest.approx(1 / 108)


def test_probabilities_and_labels_give_the_same_scores(isbi_labels):
    truth = isbi_labels[0]
    prediction = annotation(ndi.binary_dilation(truth == MEMBRANE))
    probabilities = np.where(prediction == MEMBRANE, 0.7, 0.3).astype(np.float32)
    assert evaluate(probabilities, truth) == evaluate(prediction, truth)
    # The threshold decides what counts as membrane.
    assert evaluate(probabilities, truth, threshold=0.2)["pixel_error"] == pytest.approx(
        np.mean(truth != MEMBRANE)
    )


def test_isbi_convention_truth_is_converted(isbi_labels):
    truth = isbi_labels[0]
    isbi = np.where(truth == MEMBRANE, 0, 255).astype(np.uint8)
    assert evaluate(truth, isbi)["v_rand"] == pytest.approx(1.0)


def test_stack_averages_annotated_slices(isbi_labels):
    truth = np.stack([isbi_labels[0], np.zeros_like(isbi_labels[0]), isbi_labels[1]])
    prediction = truth.copy()
    prediction[2] = annotation(ndi.binary_dilation(isbi_labels[1] == MEMBRANE))
    result = evaluate(prediction, truth)
    assert result["slices"] == [0, 2]
    assert [s["slice"] for s in result["per_slice"]] == [0, 2]
    second = evaluate(prediction[2], truth[2])
    assert result["per_slice"][1]["v_rand"] == pytest.approx(second["v_rand"])
    for key in SCORE_KEYS:
        per_slice = [s[key] for s in result["per_slice"]]
        assert result[key] == pytest.approx(np.mean(per_slice)), key
    assert result["v_rand"] < 1.0


def test_output_is_plain_json(isbi_labels):
    result = evaluate(isbi_labels[:1] == MEMBRANE, isbi_labels[:1])
    assert all(type(result[key]) is float for key in SCORE_KEYS)
    assert all(type(v) in (float, int) for s in result["per_slice"] for v in s.values())
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_truth_without_cells_has_no_segment_scores():
    truth = np.full((4, 4), MEMBRANE, dtype=np.uint8)
    result = evaluate(truth, truth)
    assert result["pixel_error"] == 0.0
    assert result["v_rand"] is None and result["v_info"] is None
    json.dumps(result, allow_nan=False)


def test_dilated_membranes_score_high_but_below_one(isbi_labels):
    truth = isbi_labels[0]
    result = evaluate(annotation(ndi.binary_dilation(truth == MEMBRANE)), truth)
    assert 0.9 < result["v_rand"] < 1.0
    assert 0.9 < result["v_info"] < 1.0
    assert 0.0 < result["pixel_error"] < 0.2


def test_all_interior_prediction_scores_low(isbi_labels):
    truth = isbi_labels[0]
    result = evaluate(np.full_like(truth, INTERIOR), truth)
    assert result["v_rand"] < 0.2
    assert result["v_rand_split"] == pytest.approx(1.0)  # nothing is split ...
    assert result["v_info"] == pytest.approx(0.0)  # ... and no information is shared


# --- threshold sweep --------------------------------------------------------------------------

def sweep_probabilities():
    """12 x 12 P(membrane): the true line (column 5) at 0.75, a false line (column 8) at 0.35."""
    probabilities = np.full((12, 12), 0.05, dtype=np.float32)
    probabilities[:, 5] = 0.75
    probabilities[:, 8] = 0.35
    return probabilities


def test_threshold_sweep_scores_each_threshold_and_takes_the_best():
    result = evaluate_thresholds(sweep_probabilities(), two_cells((5,)))
    assert result["thresholds"] == list(CHALLENGE_THRESHOLDS)
    assert CHALLENGE_THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    v_rand = {s["threshold"]: s["v_rand"] for s in result["per_threshold"]}
    v_info = {s["threshold"]: s["v_info"] for s in result["per_threshold"]}
    # Membrane where P > t. t = 0: all membrane, no cell -> one segment (the merge case
    # of test_wrong_boundaries_score_below_one, 8784 / 13104) and V_info 0.
    assert v_rand[0.0] == pytest.approx(8784 / 13104)
    assert v_info[0.0] == 0.0
    # 0.1 ... 0.3: both lines, the false one splits the right cell (5484 / 7134).
    for t in (0.1, 0.2, 0.3):
        assert v_rand[t] == pytest.approx(5484 / 7134), t
    # 0.4 ... 0.7: only the true line: perfect.
    for t in (0.4, 0.5, 0.6, 0.7):
        assert (v_rand[t], v_info[t]) == (1.0, 1.0), t
    # 0.8 ... 1.0: no membrane, one segment: the merge case again.
    for t in (0.8, 0.9, 1.0):
        assert v_rand[t] == pytest.approx(8784 / 13104), t
        assert v_info[t] == 0.0
    # The best, with the first threshold that reaches it.
    assert (result["v_rand_max"], result["v_rand_threshold"]) == (1.0, 0.4)
    assert (result["v_info_max"], result["v_info_threshold"]) == (1.0, 0.4)
    assert (result["pixel_error_min"], result["pixel_error_threshold"]) == (0.0, 0.4)
    json.dumps(result, allow_nan=False)


def test_threshold_sweep_maximum_is_at_least_every_threshold(isbi_labels):
    truth = isbi_labels[:, :160, :160]
    rng = np.random.default_rng(3)
    membrane = (truth == MEMBRANE).astype(np.float32)
    noise = ndi.gaussian_filter(rng.normal(size=truth.shape), (0, 2, 2)) * 4
    blurred = ndi.gaussian_filter(membrane, (0, 1.5, 1.5)) * 1.8
    probabilities = np.clip(blurred + noise - 0.2, 0, 1).astype(np.float32)
    thresholds = (0.25, 0.5, 0.75, 0.1)
    result = evaluate_thresholds(probabilities, truth, thresholds)
    assert result["thresholds"] == list(thresholds)
    assert result["slices"] == [0, 1]
    for scores, threshold in zip(result["per_threshold"], thresholds, strict=True):
        # Each entry is evaluate() at that threshold.
        single = evaluate(probabilities, truth, threshold=threshold)
        assert scores == {"threshold": threshold, **single}
        assert result["v_rand_max"] >= scores["v_rand"]
        assert result["v_info_max"] >= scores["v_info"]
        assert result["pixel_error_min"] <= scores["pixel_error"]
    best = {s["threshold"]: s for s in result["per_threshold"]}
    assert best[result["v_rand_threshold"]]["v_rand"] == result["v_rand_max"]
    assert best[result["v_info_threshold"]]["v_info"] == result["v_info_max"]
    assert len({s["v_rand"] for s in result["per_threshold"]}) > 1  # the sweep matters here


def test_threshold_sweep_of_labels_is_flat():
    result = evaluate_thresholds(two_cells((5, 8)), two_cells((5,)), (0.2, 0.7))
    first, second = result["per_threshold"]
    assert {**first, "threshold": 0.7} == second
    assert result["v_rand_threshold"] == 0.2


@pytest.mark.parametrize(("thresholds", "message"), [((), "empty"), ((0.5, 1.5), r"\[0, 1\]")])
def test_bad_thresholds_are_reported(thresholds, message):
    with pytest.raises(InputError, match=message):
        evaluate_thresholds(sweep_probabilities(), two_cells((5,)), thresholds)


# --- input errors -----------------------------------------------------------------------------

def test_shape_mismatch_names_both_shapes():
    with pytest.raises(InputError, match=r"\(4, 5\).*\(4, 4\)"):
        evaluate(np.zeros((4, 5), np.uint8), np.ones((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"\(3,\).*\(2,\)"):
        rand_scores(np.ones(3, int), np.ones(2, int))
    with pytest.raises(InputError, match=r"\(2, 2\).*\(2, 3\)"):
        pixel_error(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


@pytest.mark.parametrize(
    ("prediction", "truth", "message"),
    [
        (np.full((4, 4), 1.5), np.ones((4, 4), np.uint8), r"\[0, 1\]"),
        (np.full((4, 4), 255, np.uint8), np.ones((4, 4), np.uint8), "mask_to_annotation"),
        (np.ones((4, 4), np.uint8), np.zeros((4, 4), np.uint8), "no annotated pixel"),
        (np.ones((2, 4, 4, 4), np.uint8), np.ones((2, 4, 4, 4), np.uint8), "expected"),
    ],
)
def test_bad_input_is_reported(prediction, truth, message):
    with pytest.raises(InputError, match=message):
        evaluate(prediction, truth)
