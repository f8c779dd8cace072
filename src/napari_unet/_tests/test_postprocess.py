import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from napari_unet.prediction.postprocess import (
    FOUR,
    cell_labels,
    gap_lines,
    is_membrane,
    lazy_membrane,
    membrane_mask,
)


def two_cells():
    p = np.zeros((20, 20), np.float32)
    p[:, 9:11] = 0.9  # a membrane down the middle
    p[3:5, 3:5] = 0.6  # a speck inside the left cell
    p[15, 15] = 0.7
    return p


def test_membrane_mask():
    mask = membrane_mask(two_cells())
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {1, 2}
    assert (mask[:, 9:11] == 1).all() and mask[0, 0] == 2
    assert (membrane_mask(two_cells(), threshold=0.95) == 2).all()


def test_cells_tile_the_slice_and_split_on_the_membrane():
    cells = cell_labels(two_cells(), min_size=5)
    assert set(np.unique(cells)) == {1, 2}
    assert len(np.unique(cells[:, :9])) == 1 and len(np.unique(cells[:, 11:])) == 1
    assert cells[0, 0] != cells[0, 19]


def test_small_interiors_seed_no_cell():
    p = np.ones((20, 20), np.float32)
    p[2:4, 2:4] = 0.0  # 4 px
    p[10:18, 10:18] = 0.0  # 64 px
    cells = cell_labels(p, min_size=10)
    assert set(np.unique(cells)) == {1}
    assert (cell_labels(np.ones((5, 5), np.float32)) == 0).all()


def test_stack_labels_are_unique_across_slices():
    cells = cell_labels(np.stack([two_cells(), two_cells()]), min_size=5)
    assert set(np.unique(cells[0])) == {1, 2} and set(np.unique(cells[1])) == {3, 4}


def faint_gap():
    """Two cells split by a membrane whose middle stretch is faint (0.4)."""
    p = np.full((30, 30), 0.05, np.float32)
    p[:, 14:16] = 0.9
    p[12:18, 14:16] = 0.4
    return p


def test_closing_the_gaps_splits_cells_a_threshold_merges():
    p = faint_gap()
    interiors = lambda membrane: ndi.label(~membrane, structure=FOUR)[1]  # noqa: E731
    assert interiors(is_membrane(p, threshold=0.6)) == 1  # the faint stretch merges the cells
    closed = is_membrane(p, threshold=0.6, close_gaps=0.2)
    assert interiors(closed) == 2
    lines = gap_lines(p, level=0.2)
    assert lines[:, 14:16].all(axis=1).sum() == 0  # one pixel wide, on the membrane
    assert lines[:, 14:16].any(axis=1).all() and not lines[:, :13].any()
    assert (closed == (p > 0.6) | lines).all()
    np.testing.assert_array_equal(membrane_mask(p, threshold=0.6, close_gaps=0.2),
                                  np.where(closed, 1, 2))
    assert not gap_lines(np.full((10, 10), 0.05, np.float32)).any()  # one cell: no line


def test_closing_is_per_slice_and_lazy_on_whole_slices():
    stack = np.stack([faint_gap(), faint_gap().T])
    closed = is_membrane(stack, threshold=0.6, close_gaps=0.2)
    np.testing.assert_array_equal(closed[1], is_membrane(faint_gap().T, threshold=0.6,
                                                         close_gaps=0.2))
    lazy = lazy_membrane(da.from_array(stack, chunks=(1, 10, 10)), threshold=0.6,
                         close_gaps=0.2)
    np.testing.assert_array_equal(lazy.compute(), closed)
    plain = lazy_membrane(da.from_array(stack, chunks=(1, 10, 10)), threshold=0.6)
    np.testing.assert_array_equal(plain.compute(), stack > 0.6)
