import dataclasses
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.errors import InputError
from napari_unet.io.labels import INTERIOR, MEMBRANE, UNLABELLED
from napari_unet.io.sample import isbi2012
from napari_unet.training import nearest_cells, weights
from napari_unet.training.weights import TRUNCATE, WeightConfig, annotation_weight_map, weight_map

# --- the naive reference: eq. 2 by its definition --------------------------------------------


def naive_distances(interior):
    """d1, d2 from one full-image Euclidean distance transform per cell.

    A running update of the two smallest keeps memory at a few images instead of
    one distance map per cell.
    """
    cells, n_cells = ndi.label(interior, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    d1 = np.full(interior.shape, np.inf)
    d2 = np.full(interior.shape, np.inf)
    for cell in range(1, n_cells + 1):
        d = ndi.distance_transform_edt(cells != cell)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    return d1, d2, n_cells


def naive_weights(interior, distances, *, w0, sigma, balance, annotated=None):
    """w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) off the interior, untruncated."""
    d1, d2, n_cells = distances
    counted = np.ones(interior.shape, bool) if annotated is None else annotated
    n_total = counted.sum()
    n_interior = interior.sum()
    if balance:
        w_interior = n_total / (2 * n_interior) if n_interior else 0.0
        w_other = n_total / (2 * (n_total - n_interior)) if n_total > n_interior else 0.0
        w_c = np.where(interior, w_interior, w_other)
    else:
        w_c = np.ones(interior.shape)
    border = np.zeros(interior.shape)
    if n_cells >= 2:
        border = np.where(interior, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))
    return np.where(counted, w_c + border, 0.0)


def naive_weight_map(mask, *, w0=10.0, sigma=5.0, balance=True):
    interior = np.asarray(mask) != 0
    return naive_weights(interior, naive_distances(interior), w0=w0, sigma=sigma, balance=balance)


def assert_matches(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=0)


# --- real data: one ISBI slice, its naive distances computed once ----------------------------


@pytest.fixture(scope="module")
def isbi_labels():
    return isbi2012()[1]


@pytest.fixture(scope="module")
def isbi_slice(isbi_labels):
    interior = isbi_labels[0] == INTERIOR
    return interior, naive_distances(interior)


@pytest.mark.parametrize(
    ("w0", "sigma", "balance"), [(10.0, 5.0, True), (5.0, 2.0, False), (20.0, 9.0, True)]
)
def test_matches_naive_on_isbi_slice(isbi_slice, w0, sigma, balance):
    interior, distances = isbi_slice
    expected = naive_weights(interior, distances, w0=w0, sigma=sigma, balance=balance)
    actual = weight_map(interior, w0=w0, sigma=sigma, balance=balance)
    assert_matches(actual, expected)
    assert distances[2] > 50  # many cells, and a border term that matters:
    assert (expected - weight_map(interior, w0=0, balance=balance)).max() > w0 / 4


def test_truncation_still_matches_naive(isbi_slice):
    interior, distances = isbi_slice
    sigma = 1.5
    cut = (distances[0] + distances[1] >= TRUNCATE * sigma) & ~interior
    assert cut.sum() > 1000  # the cut-off is exercised on many pixels
    expected = naive_weights(interior, distances, w0=10.0, sigma=sigma, balance=True)
    actual = weight_map(interior, sigma=sigma)
    assert_matches(actual, expected)
    only_class = weight_map(interior, w0=0)
    np.testing.assert_array_equal(actual[cut], only_class[cut])


def test_truncation_constant_is_negligible():
    # Beyond the cut-off the term is below w0 * 1.5e-8, against w_c >= 1/2 with balance.
    assert math.exp(-(TRUNCATE**2) / 2) < 1e-7


@pytest.mark.parametrize(("gap", "kept"), [(10, True), (11, False)])
def test_cutoff_at_truncate_sigma(gap, kept):
    mask = np.array([[1] + [0] * gap + [1]], bool)  # d1 + d2 = gap + 1 in the gap
    sigma = 2.0  # cut-off 12
    actual = weight_map(mask, sigma=sigma, balance=False)
    expected = 1 + 10.0 * math.exp(-((gap + 1) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(actual[0, 1:-1], expected if kept else 1.0, rtol=1e-6)
    assert_matches(actual, naive_weight_map(mask, sigma=sigma, balance=False))


@pytest.fixture(scope="module")
def partial_annotation(isbi_labels):
    labels = isbi_labels[5, 100:228, 300:428].copy()
    labels[:, 80:] = UNLABELLED
    labels[90:, :40] = UNLABELLED
    return labels


def test_annotation_matches_naive_on_isbi_crop(partial_annotation):
    labels = partial_annotation
    interior = labels == INTERIOR
    annotated = labels != UNLABELLED
    expected = naive_weights(
        interior,
        naive_distances(interior),
        w0=10.0,
        sigma=5.0,
        balance=True,
        annotated=annotated,
    )
    assert_matches(annotation_weight_map(labels), expected)


# --- synthetic cases against the naive reference ---------------------------------------------


def _two_touching_cells():
    mask = np.ones((7, 9), bool)
    mask[:, 4] = False
    return mask


def _border_cells():
    mask = np.zeros((10, 12), bool)
    mask[:3, :4] = mask[6:, :2] = mask[:, 10:] = mask[4, 5:8] = True
    return mask


def _tiny_cells():
    mask = np.zeros((9, 11), bool)
    mask[::2, ::3] = True
    return mask


def _one_cell():
    mask = np.zeros((9, 9), bool)
    mask[2:6, 3:7] = True
    return mask


SYNTHETIC = {
    "one cell": _one_cell(),
    "two touching cells": _two_touching_cells(),
    "no cells": np.zeros((5, 6), bool),
    "all interior": np.ones((4, 5), bool),
    "cells on the image border": _border_cells(),
    "1-pixel cells": _tiny_cells(),
    "one row": np.array([[1, 0, 1, 1, 0, 0, 1]], bool),
    "one column": np.array([[1], [0], [0], [1], [0], [1]], bool),
}


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_matches_naive_on_synthetic_masks(name, sigma):
    mask = SYNTHETIC[name]
    assert_matches(weight_map(mask, sigma=sigma), naive_weight_map(mask, sigma=sigma))


@pytest.mark.parametrize("seed", range(12))
def test_matches_naive_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(5, 40, size=2))
    mask = rng.random(shape) < rng.uniform(0.2, 0.8)
    sigma = rng.uniform(0.5, 6.0)
    assert_matches(weight_map(mask, sigma=sigma), naive_weight_map(mask, sigma=sigma))


@pytest.mark.parametrize("seed", range(6))
def test_distances_are_exact_within_the_cutoff(seed):
    rng = np.random.default_rng(100 + seed)
    interior = rng.random((30, 35)) < 0.45
    d1, d2, _ = naive_distances(interior)
    cells, _ = weights._label_cells(interior)
    pixels = np.flatnonzero(~interior)
    cutoff = 9.5
    sq1, sq2 = nearest_cells.two_nearest_cells(cells, pixels, cutoff=cutoff)
    d1, d2 = d1.ravel()[pixels], d2.ravel()[pixels]
    inside = d1 + d2 < cutoff
    np.testing.assert_array_equal(sq1[inside], np.round(d1[inside] ** 2))
    np.testing.assert_array_equal(sq2[inside], np.round(d2[inside] ** 2))
    assert (np.sqrt(sq1[~inside]) + np.sqrt(sq2[~inside]) >= cutoff).all()


@pytest.mark.parametrize("seed", range(4))
def test_labels_are_the_4_connected_components(seed):
    rng = np.random.default_rng(200 + seed)
    interior = rng.random((37, 53)) < rng.uniform(0.3, 0.7)
    interior[0, :] = interior[:, -1] = True  # components on the image border
    cells, n_cells = weights._label_cells(interior)
    expected, n_expected = ndi.label(interior)  # 4-connectivity by default
    assert cells.shape == interior.shape
    assert n_cells == n_expected
    assert ((cells == 0) == ~interior).all()
    # The same partition, numbered alike or not: one label maps to one label.
    pairs = np.unique(np.stack([cells[interior], expected[interior]]), axis=1)
    assert pairs.shape[1] == n_cells == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


@pytest.mark.parametrize(("seed", "sigma"), [(0, 2.5), (1, 4.0), (2, 6.0)])
def test_matches_naive_on_larger_random_masks(seed, sigma):
    # Big enough for many cells, long searches and cells on every image edge.
    rng = np.random.default_rng(300 + seed)
    mask = ndi.binary_opening(rng.random((90, 70)) < 0.6)
    assert_matches(weight_map(mask, sigma=sigma), naive_weight_map(mask, sigma=sigma))


def test_distances_are_exact_everywhere_without_a_cutoff():
    # A cut-off beyond the image: the search reaches the image diagonal and no further.
    interior = np.random.default_rng(7).random((60, 50)) < 0.4
    d1, d2, _ = naive_distances(interior)
    cells, _ = weights._label_cells(interior)
    pixels = np.flatnonzero(~interior)
    sq1, sq2 = nearest_cells.two_nearest_cells(cells, pixels, cutoff=1e9)
    np.testing.assert_array_equal(sq1, np.round(d1.ravel()[pixels] ** 2))
    np.testing.assert_array_equal(sq2, np.round(d2.ravel()[pixels] ** 2))


def test_compiled_passes_agree_with_their_python_source():
    interior = np.random.default_rng(8).random((30, 40)) < 0.5
    cells, _ = weights._label_cells(interior)
    pixels = np.flatnonzero(~interior)
    reach = 12
    results = []
    for row_pass, column_pass in [
        nearest_cells._compiled_passes(),
        (nearest_cells._row_pass, nearest_cells._column_pass),
    ]:
        keys = np.empty((*cells.shape, 2), np.int64)
        row_pass(cells, reach + 1, keys)
        sq1, sq2 = np.empty(len(pixels), np.int64), np.empty(len(pixels), np.int64)
        column_pass(keys, pixels, reach, sq1, sq2)
        results.append((keys, sq1, sq2))
    for compiled, python in zip(*results, strict=True):
        np.testing.assert_array_equal(compiled, python)


def test_row_pass_finds_the_nearest_cell_and_the_nearest_other_cell():
    cells = np.array([[1, 0, 0, 1, 0, 0, 2], [0, 0, 0, 0, 0, 0, 0]], np.int32)
    far = 10
    keys = np.empty((*cells.shape, 2), np.int64)
    nearest_cells._compiled_passes()[0](cells, far, keys)
    squared, cell = keys >> 32, keys & 0xFFFFFFFF
    # Cell 1 twice in the row: the other cell is always cell 2, on the right.
    np.testing.assert_array_equal(squared[0, :, 0], [0, 1, 1, 0, 1, 1, 0])
    np.testing.assert_array_equal(cell[0, :, 0], [1, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(squared[0, :, 1], [36, 25, 16, 9, 4, 4, 9])
    np.testing.assert_array_equal(cell[0, :, 1], [2, 2, 2, 2, 2, 1, 1])
    # No cell in the row: every distance at the cap, of no cell.
    np.testing.assert_array_equal(squared[1], far**2)
    np.testing.assert_array_equal(cell[1], 0)


def test_import_does_not_load_numba():
    code = ("import sys, napari_unet.training.weights, napari_unet.config; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- analytic values on small literal arrays -------------------------------------------------


def test_line_of_width_one_between_two_cells():
    mask = _two_touching_cells()  # 7 x 9, column 4 is the line
    w0, sigma = 10.0, 5.0
    actual = weight_map(mask, w0=w0, sigma=sigma)
    n, n_line = mask.size, 7
    border = w0 * math.exp(-((1 + 1) ** 2) / (2 * sigma**2))  # d1 = d2 = 1 on the line
    np.testing.assert_allclose(actual[:, 4], n / (2 * n_line) + border, rtol=1e-6)
    np.testing.assert_allclose(actual[mask], n / (2 * (n - n_line)), rtol=1e-6)


def test_line_of_width_two_between_two_cells():
    mask = np.ones((3, 8), bool)
    mask[:, 3:5] = False  # d1 = 1, d2 = 2 on both columns of the line
    actual = weight_map(mask, w0=4.0, sigma=2.0, balance=False)
    np.testing.assert_allclose(actual[:, 3:5], 1 + 4.0 * math.exp(-9 / 8), rtol=1e-6)
    np.testing.assert_array_equal(actual[mask], 1.0)


def test_distances_are_euclidean():
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = mask[2, 2] = True
    actual = weight_map(mask, w0=1.0, sigma=1.0, balance=False)
    # Centre: d1 = d2 = sqrt(2). Top middle: d1 = 1, d2 = sqrt(5).
    np.testing.assert_allclose(actual[1, 1], 1 + math.exp(-8 / 2), rtol=1e-6)
    np.testing.assert_allclose(
        actual[0, 1], 1 + math.exp(-((1 + math.sqrt(5)) ** 2) / 2), rtol=1e-6
    )


def test_diagonal_neighbours_are_separate_cells():
    mask = np.eye(4, dtype=bool)  # 4 cells under 4-connectivity
    actual = weight_map(mask, w0=1.0, sigma=1.0, balance=False)
    np.testing.assert_allclose(actual[0, 1], 1 + math.exp(-4 / 2), rtol=1e-6)


# --- class balance and w0 --------------------------------------------------------------------


def test_balance_gives_each_class_half_the_total_weight(isbi_labels):
    interior = isbi_labels[3] == INTERIOR
    actual = weight_map(interior, w0=0)
    np.testing.assert_allclose(actual[interior].sum(), interior.size / 2, rtol=1e-5)
    np.testing.assert_allclose(actual[~interior].sum(), interior.size / 2, rtol=1e-5)


def test_without_balance_class_weight_is_one():
    mask = _border_cells()
    np.testing.assert_array_equal(weight_map(mask, w0=0, balance=False), 1.0)
    actual = weight_map(mask, balance=False)
    np.testing.assert_array_equal(actual[mask], 1.0)
    assert (actual[~mask] > 1.0).all()


def test_w0_zero_gives_only_the_class_weight():
    mask = _tiny_cells()
    n, n_in = mask.size, mask.sum()
    expected = np.where(mask, n / (2 * n_in), n / (2 * (n - n_in))).astype(np.float32)
    np.testing.assert_array_equal(weight_map(mask, w0=0.0), expected)


def test_border_term_scales_with_w0():
    mask = _two_touching_cells()
    base = weight_map(mask, w0=0)
    term = weight_map(mask, w0=1.0) - base
    np.testing.assert_allclose(weight_map(mask, w0=7.0) - base, 7.0 * term, rtol=1e-5)


def test_one_cell_has_no_border_term():
    mask = _one_cell()
    np.testing.assert_array_equal(weight_map(mask), weight_map(mask, w0=0))


# --- annotation labels -----------------------------------------------------------------------


def _annotation():
    labels = np.full((8, 10), MEMBRANE, np.uint8)
    labels[1:4, 1:4] = labels[1:4, 5:9] = labels[5:7, 1:6] = INTERIOR
    labels[:, 8:] = UNLABELLED
    labels[7, :3] = UNLABELLED
    return labels


def test_annotation_is_zero_where_not_annotated():
    labels = _annotation()
    actual = annotation_weight_map(labels)
    assert (actual[labels == UNLABELLED] == 0).all()
    assert (actual[labels != UNLABELLED] > 0).all()
    nothing = np.zeros_like(labels)
    np.testing.assert_array_equal(annotation_weight_map(nothing), 0.0)


def test_annotation_border_term_changes_with_w0():
    labels = _annotation()
    low, high = annotation_weight_map(labels, w0=1.0), annotation_weight_map(labels, w0=20.0)
    membrane = labels == MEMBRANE
    assert (high[membrane] > low[membrane]).all()
    np.testing.assert_array_equal(high[labels != MEMBRANE], low[labels != MEMBRANE])


def test_annotation_balances_annotated_pixels_only():
    labels = _annotation()
    actual = annotation_weight_map(labels, w0=0)
    n = np.count_nonzero(labels)
    np.testing.assert_allclose(
        actual[labels == INTERIOR], n / (2 * np.sum(labels == INTERIOR)), rtol=1e-6
    )
    np.testing.assert_allclose(
        actual[labels == MEMBRANE], n / (2 * np.sum(labels == MEMBRANE)), rtol=1e-6
    )


def test_full_annotation_equals_weight_map_of_the_interior(isbi_labels):
    labels = isbi_labels[7]
    np.testing.assert_array_equal(annotation_weight_map(labels), weight_map(labels == INTERIOR))


def test_annotation_rejects_other_label_values():
    with pytest.raises(InputError, match="255"):
        annotation_weight_map(np.array([[0, 255], [1, 2]], np.uint8))


# --- types, inputs, errors, configuration ----------------------------------------------------


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.uint16, np.int64, np.float32, np.float64])
def test_returns_float32_for_any_mask_dtype(dtype):
    mask = _two_touching_cells().astype(dtype)
    actual = weight_map(mask)
    assert actual.dtype == np.float32
    assert actual.shape == mask.shape
    np.testing.assert_array_equal(actual, weight_map(mask != 0))


def test_nonzero_values_are_interior():
    mask = _two_touching_cells().astype(np.int16) * -3
    np.testing.assert_array_equal(weight_map(mask), weight_map(mask != 0))


def test_inputs_are_not_modified():
    mask = _border_cells().astype(np.uint8) * 255
    labels = _annotation()
    mask_copy, labels_copy = mask.copy(), labels.copy()
    mask.flags.writeable = labels.flags.writeable = False  # read-only input works too
    weight_map(mask)
    annotation_weight_map(labels)
    np.testing.assert_array_equal(mask, mask_copy)
    np.testing.assert_array_equal(labels, labels_copy)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 6, 6)), "3 axes"),
        (np.zeros((32, 32, 3), np.uint8), "3 axes"),
        (np.zeros(6), "1 axes"),
        (np.zeros((0, 4)), "empty"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), "NaN"),
        (np.array([["a", "b"]]), "dtype"),
    ],
)
def test_rejects_bad_masks(array, message):
    with pytest.raises(InputError, match=message):
        weight_map(array)
    with pytest.raises(ValueError, match=message):
        annotation_weight_map(array)


@pytest.mark.parametrize(("w0", "sigma"), [(-1.0, 5.0), (10.0, 0.0), (10.0, -2.0), (np.nan, 5.0)])
def test_rejects_bad_options(w0, sigma):
    with pytest.raises(InputError):
        weight_map(np.ones((3, 3)), w0=w0, sigma=sigma)
    with pytest.raises(InputError):
        WeightConfig(w0=w0, sigma=sigma)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        weight_map(np.ones((3, 3)), 10.0)


def test_config_defaults_are_the_papers():
    config = WeightConfig()
    assert (config.w0, config.sigma, config.balance) == (10.0, 5.0, True)
    assert config.membrane_weight == 1.0  # not in the paper: off by default
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.w0 = 1.0
    mask = _border_cells()
    custom = WeightConfig(w0=3.0, sigma=2.0, balance=False)
    eq2 = {k: v for k, v in dataclasses.asdict(custom).items() if k != "membrane_weight"}
    np.testing.assert_array_equal(
        weight_map(mask, **eq2),
        weight_map(mask, w0=3.0, sigma=2.0, balance=False),
    )


def test_memory_stays_bounded(isbi_labels):
    interior = isbi_labels[0] == INTERIOR
    weight_map(interior)  # compile (or load) the passes outside the measurement
    tracemalloc.start()
    try:
        weight_map(interior)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The output is 1 MB; one distance map per cell would be over 100 MB.
    assert peak < 40e6


def test_package_exports_weight_map():
    import napari_unet

    assert napari_unet.weight_map is weight_map


def test_membrane_weight_scales_the_class_weight_of_membrane_pixels():
    from napari_unet.training.weights import WeightConfig

    labels = np.array([[2, 2, 1, 2, 2],
                       [2, 2, 1, 2, 2],
                       [0, 0, 1, 0, 0]], dtype=np.uint8)
    plain = WeightConfig(w0=0.0, balance=False, membrane_weight=2.0).of(labels)
    np.testing.assert_array_equal(plain, np.where(labels == 1, 2.0, (labels == 2) * 1.0))
    paper = WeightConfig().of(labels)
    doubled = WeightConfig(membrane_weight=2.0).of(labels)
    np.testing.assert_array_equal(doubled[labels != 1], paper[labels != 1])
    # the class weight doubles, the border term (w0 exp(...)) does not
    balanced = WeightConfig(w0=0.0).of(labels)
    np.testing.assert_allclose(doubled[labels == 1] - paper[labels == 1],
                               balanced[labels == 1], rtol=1e-6)
    with pytest.raises(InputError, match="membrane_weight must be"):
        WeightConfig(membrane_weight=0.0)
