import numpy as np

from napari_unet.postprocess import cell_labels, membrane_mask


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
