from collections import deque

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.evaluation.segments import segments_from_membrane
from napari_unet.io.labels import MEMBRANE
from napari_unet.io.sample import isbi2012


@pytest.fixture(scope="module")
def isbi_labels():
    return isbi2012()[1][:2]


def test_segments_are_4_connected_so_a_diagonal_line_separates():
    membrane = np.eye(6, dtype=bool)
    segments = segments_from_membrane(membrane)
    # Above and below the 8-connected diagonal: two segments (8-connectivity would give one).
    assert segments.max() == 2
    assert segments[0, 5] != segments[5, 0]
    np.testing.assert_array_equal(segments == 0, membrane)


def test_thick_boundary_thins_to_the_same_segments_as_a_thin_one():
    thick = np.zeros((9, 11), dtype=bool)
    thick[:, 3:6] = True
    thin = np.zeros((9, 11), dtype=bool)
    thin[:, 4] = True
    np.testing.assert_array_equal(segments_from_membrane(thick), segments_from_membrane(thin))
    # The band meets both image borders and still separates the two cells.
    assert segments_from_membrane(thick).max() == 2


def test_without_thinning_every_membrane_pixel_is_boundary():
    thick = np.zeros((9, 11), dtype=bool)
    thick[:, 3:6] = True
    segments = segments_from_membrane(thick, thin=False)
    np.testing.assert_array_equal(segments == 0, thick)
    assert segments.max() == 2


def test_thinning_keeps_the_cells_of_a_real_label_slice(isbi_labels):
    membrane = isbi_labels[0] == MEMBRANE
    thinned = segments_from_membrane(membrane)
    unthinned = segments_from_membrane(membrane, thin=False)
    assert thinned.max() == unthinned.max() > 50
    assert np.count_nonzero(thinned == 0) < 0.5 * np.count_nonzero(membrane)
    # Every thinned segment grows out of exactly one original cell.
    pairs = np.unique(np.stack([thinned[unthinned > 0], unthinned[unthinned > 0]]), axis=1)
    assert pairs.shape[1] == unthinned.max()


def test_mask_keeps_segments_inside_it():
    membrane = np.zeros((4, 6), dtype=bool)
    mask = np.ones((4, 6), dtype=bool)
    mask[:, 3] = False
    segments = segments_from_membrane(membrane, mask=mask)
    assert segments.max() == 2
    assert (segments[:, 3] == 0).all()


def test_even_width_band_gets_its_dam_on_the_side_the_flood_reaches_later():
    # The challenge's flood seeds column by column (top to bottom, left to right)
    # and decides a membrane pixel from its neighbours decided before it.
    vertical = np.zeros((6, 10), dtype=bool)
    vertical[:, 4:6] = True
    segments = segments_from_membrane(vertical)
    # Column 4 is seeded first and joins the left cell; column 5 then sees the left
    # cell (column 4) and the right cell (column 6): a dam.
    assert (segments[:, :5] == segments[0, 0]).all()
    assert (segments[:, 5] == 0).all()
    assert (segments[:, 6:] == segments[0, 9]).all()
    horizontal = np.zeros((6, 5), dtype=bool)
    horizontal[2:4] = True
    segments = segments_from_membrane(horizontal)
    # Within a column row 2 comes before row 3: the lower row is the dam.
    assert (segments[:3] == segments[0, 0]).all()
    assert (segments[3] == 0).all()
    assert (segments[4:] == segments[5, 0]).all()


def test_membrane_speck_inside_a_cell_joins_the_cell():
    membrane = np.zeros((9, 9), dtype=bool)
    membrane[3:6, 3:6] = True  # reached only by the surrounding cell: no dam
    segments = segments_from_membrane(membrane)
    np.testing.assert_array_equal(segments, np.ones((9, 9)))


def test_maps_without_membrane_or_without_cells_are_one_segment():
    np.testing.assert_array_equal(segments_from_membrane(np.zeros((3, 4), bool)), 1)
    # No basin to flood from: the challenge's watershed makes the whole map one basin.
    np.testing.assert_array_equal(segments_from_membrane(np.ones((3, 4), bool)), 1)


def vincent_soille(membrane):
    """Reference: Vincent and Soille's (1991) flooding of the two-level image, as published.

    Cells (level 0) become basins, 4-connected, numbered in column-major order.
    Membrane pixels (level 1) touching a basin are queued in column-major order;
    a queued pixel takes the label of a labelled neighbour, becomes a watershed
    pixel (0) on meeting a second label, and the `flag` lets a pixel that first
    saw a watershed neighbour still take a basin's label.
    """
    height, width = membrane.shape
    mask, queued, unset = -2, -3, -1
    lab = np.full((height, width), unset)
    order = [(y, x) for x in range(width) for y in range(height)]

    def around(y, x):
        for v, u in ((y, x - 1), (y - 1, x), (y, x + 1), (y + 1, x)):
            if 0 <= v < height and 0 <= u < width:
                yield v, u

    current, flag = 0, False
    for level in (False, True):
        pixels = [p for p in order if membrane[p] == level]
        fifo = deque()
        for p in pixels:
            lab[p] = mask
            if any(lab[q] >= 0 for q in around(*p)):
                lab[p] = queued
                fifo.append(p)
        while fifo:
            p = fifo.popleft()
            for q in around(*p):
                if lab[q] > 0:
                    if lab[p] == queued or (lab[p] == 0 and flag):
                        lab[p] = lab[q]
                    elif lab[p] > 0 and lab[p] != lab[q]:
                        lab[p], flag = 0, False
                elif lab[q] == 0:
                    if lab[p] == queued:
                        lab[p], flag = 0, True
                elif lab[q] == mask:
                    lab[q] = queued
                    fifo.append(q)
        for p in pixels:
            if lab[p] == mask:
                current += 1
                lab[p] = current
                fifo.append(p)
                while fifo:
                    for q in around(*fifo.popleft()):
                        if lab[q] == mask:
                            lab[q] = current
                            fifo.append(q)
    return lab


def test_flood_matches_the_published_watershed_algorithm():
    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = tuple(rng.integers(1, 13, size=2))
        if trial % 2:
            membrane = rng.random(shape) < rng.uniform(0.2, 0.9)
        else:
            seeds = rng.random(shape) < 0.15
            membrane = ndi.binary_dilation(seeds, iterations=int(rng.integers(1, 3)))
        expected = vincent_soille(membrane)
        segments = segments_from_membrane(membrane)
        np.testing.assert_array_equal(segments == 0, expected == 0)
        # The same partition: labels correspond one to one.
        pairs = np.unique(np.stack([segments[segments > 0], expected[expected > 0]]), axis=1)
        assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]
