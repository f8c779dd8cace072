"""Pixel weight maps for U-Net's loss (Ronneberger et al. 2015, eq. 2).

The weight of pixel x is

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

(Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", eq. 2), where w_c balances the class
frequencies and d1, d2 are the Euclidean distances to the nearest and the
second-nearest cell. The border term makes the network learn the thin
membranes that separate touching cells.

How the distances are computed
------------------------------
Cells are labelled with OpenCV's connected components (4-connectivity, the
same partition as ``scipy.ndimage.label``). The naive method runs one
Euclidean distance transform per cell. Here the two
nearest distinct cells of every pixel come from a separable transform instead:
pass 1 finds, along each row, the nearest cell and the nearest *other* cell of
every pixel (exact, from the runs of interior pixels); pass 2 looks up and down
each column from the non-interior pixels only and keeps the two smallest
distances to distinct cells, stopping as soon as no row further away can be
closer. Keeping two distinct cells per row is enough for the second-nearest
cell to be exact, in the same way as one per row is enough for the ordinary
distance transform. The border term is cut off where d1 + d2 >= TRUNCATE *
sigma, which bounds the search and changes w by at most w0 * exp(-18).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError
from .labels import INTERIOR, MEMBRANE, UNLABELLED, label_values

TRUNCATE = 6.0
"""Cut-off of the border term, in units of sigma.

Where d1 + d2 >= TRUNCATE * sigma the border term is set to 0; it would be at
most w0 * exp(-TRUNCATE**2 / 2) = 1.5e-8 * w0 there. Each cell therefore only
influences pixels within TRUNCATE * sigma of it, which bounds the search.
"""


@dataclass(frozen=True)
class WeightConfig:
    """Settings of the weight map, shared by training, the CLI and the GUI.

    The defaults are those of Ronneberger et al. (2015), section 3.

    Parameters
    ----------
    w0 : float
        Height of the border term, w0 in eq. 2 (paper: 10).
    sigma : float
        Width of the border term in pixels, sigma in eq. 2 (paper: 5).
    balance : bool
        Whether w_c balances the class frequencies (N / (2 N_class)); when
        False, w_c = 1.
    """

    w0: float = 10.0
    sigma: float = 5.0
    balance: bool = True

    def __post_init__(self) -> None:
        _check_options(self.w0, self.sigma)


def weight_map(
    mask: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, balance: bool = True
) -> np.ndarray:
    """Compute the U-Net weight map of a binary cell mask (eq. 2 of the paper).

    ``w = w_c + w0 * exp(-(d1 + d2)**2 / (2 * sigma**2))`` (Ronneberger et al.
    2015, eq. 2). Cells are the 4-connected components of the interior; d1 and
    d2 are the Euclidean distances to the nearest and the second-nearest cell.
    The border term applies on non-interior pixels only, and is 0 where there
    are fewer than two cells or where d1 + d2 >= ``TRUNCATE * sigma``.

    Parameters
    ----------
    mask : (Y, X) ndarray
        Nonzero = cell interior. Any numeric or bool dtype; not modified.
    w0 : float
        Height of the border term (paper: 10).
    sigma : float
        Width of the border term, in pixels (paper: 5).
    balance : bool
        With True, ``w_c = N / (2 N_class)``: N pixels in all, N_class of the
        pixel's class (interior or not), so each class weighs half the total.
        With False, ``w_c = 1``.

    Returns
    -------
    weights : (Y, X) float32 ndarray

    Raises
    ------
    InputError
        When ``mask`` is not a finite, non-empty 2D array, or the options are
        out of range.
    """
    _check_options(w0, sigma)
    interior = _check_2d(mask, "mask") != 0
    weights = _class_weights(interior, balance=balance)
    _add_border_term(weights, interior, np.flatnonzero(~interior), w0=w0, sigma=sigma)
    return weights


def annotation_weight_map(
    labels: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, balance: bool = True
) -> np.ndarray:
    """Compute the weight map of (possibly partial) annotation labels.

    As `weight_map`, with cells the 4-connected components of
    ``labels == 2`` (interior). The class balance counts annotated pixels only,
    and pixels that are not annotated (0) get weight exactly 0, so the loss
    ignores them.

    Parameters
    ----------
    labels : (Y, X) ndarray
        Annotation labels: 0 = not annotated, 1 = membrane, 2 = interior.
        Not modified.
    w0 : float
        Height of the border term (paper: 10).
    sigma : float
        Width of the border term, in pixels (paper: 5).
    balance : bool
        With True, ``w_c = N / (2 N_class)`` over the annotated pixels; with
        False, ``w_c = 1`` on annotated pixels.

    Returns
    -------
    weights : (Y, X) float32 ndarray
        0 where ``labels == 0``.

    Raises
    ------
    InputError
        When ``labels`` is not a 2D array of values in {0, 1, 2}, or the
        options are out of range.
    """
    _check_options(w0, sigma)
    labels = _check_2d(labels, "labels")
    extra = sorted(set(label_values(labels).tolist()) - {0, 1, 2})
    if extra:
        raise InputError(
            f"labels hold values {extra[:5]}; expected 0 = not annotated, 1 = membrane, "
            "2 = interior"
        )
    interior = labels == INTERIOR
    weights = _class_weights(interior, labels != UNLABELLED, balance=balance)
    membrane = np.flatnonzero(labels == MEMBRANE)
    _add_border_term(weights, interior, membrane, w0=w0, sigma=sigma)
    return weights


def _check_options(w0: float, sigma: float) -> None:
    if not (math.isfinite(w0) and w0 >= 0):
        raise InputError(f"w0 must be a finite number >= 0, got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a finite number > 0, got {sigma}")


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise InputError(
            f"{name} has {array.ndim} axes (shape {array.shape}); the weight map needs one "
            "(Y, X) slice"
        )
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    if array.dtype != bool and not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{name} has dtype {array.dtype}; expected integers, floats or bool")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name} is complex; expected real values")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or inf values")
    return array


def _class_weights(
    interior: np.ndarray, annotated: np.ndarray | None = None, *, balance: bool
) -> np.ndarray:
    """Return w_c: N / (2 N_class) with ``balance``, else 1; 0 where not annotated."""
    n_total = interior.size if annotated is None else np.count_nonzero(annotated)
    n_interior = np.count_nonzero(interior)
    n_other = n_total - n_interior
    if balance:
        w_interior = n_total / (2 * n_interior) if n_interior else 0.0
        w_other = n_total / (2 * n_other) if n_other else 0.0
    else:
        w_interior = w_other = 1.0
    weights = np.where(interior, np.float32(w_interior), np.float32(w_other))
    if annotated is not None:
        weights *= annotated
    return weights


def _add_border_term(
    weights: np.ndarray, interior: np.ndarray, pixels: np.ndarray, *, w0: float, sigma: float
) -> None:
    """Add eq. 2's border term to ``weights`` at the flat indices ``pixels``, in place.

    ``pixels`` must all be outside the interior.
    """
    if w0 == 0 or not pixels.size:
        return
    cells, n_cells = _label_cells(interior)
    if n_cells < 2:
        return
    cutoff = TRUNCATE * sigma
    sq1, sq2 = _two_nearest_cells(cells, n_cells, pixels, cutoff=cutoff)
    d = np.sqrt(sq1, dtype=np.float32)
    d += np.sqrt(sq2, dtype=np.float32)
    term = np.exp(d * d * np.float32(-0.5 / sigma**2))
    term *= np.float32(w0)
    term *= d < cutoff
    weights.ravel()[pixels] += term


def _label_cells(interior: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected components of the interior (1..n, 0 elsewhere)."""
    image = np.ascontiguousarray(interior, dtype=bool).view(np.uint8)
    count, cells = cv2.connectedComponents(image, connectivity=4, ltype=cv2.CV_32S)
    return cells, count - 1


_BATCH = 1 << 14
"""Pixels times rows below which pass 2 merges all remaining rows at once."""

_COMPACT = 0.5
"""Fraction of pixels still going below which pass 2 drops the finished ones."""


@dataclass(frozen=True)
class _Keys:
    """Packing of (squared distance, cell) pairs into sortable integers.

    ``key = squared_distance << label_bits | cell``: comparing keys compares
    distances first, and two keys hold the same cell when their low bits agree.
    Squared distances saturate at ``cap`` (beyond the cut-off, where their value
    no longer matters), which keeps keys in 32 bits for most images.
    """

    dtype: type
    label_bits: int
    cap: int

    @classmethod
    def for_image(cls, n_cells: int, cap: int) -> "_Keys":
        label_bits = (n_cells + 2).bit_length()
        bits = label_bits + (2 * cap).bit_length()
        return cls(np.int32 if bits <= 30 else np.int64, label_bits, cap)

    @property
    def same_cell_flag(self) -> int:
        """A bit above every key, to push a candidate out of the running."""
        return 1 << (30 if self.dtype is np.int32 else 62)

    def saturated(self, cell: int) -> int:
        """Return the key of ``cell`` at the cap (farther than the reach)."""
        return self.cap << self.label_bits | cell

    def pack(self, distance: np.ndarray, cell: np.ndarray, out: np.ndarray) -> None:
        """Pack 1D distances (clipped to 0..sqrt(cap)) and cells into ``out``.

        ``distance`` is overwritten.
        """
        np.clip(distance, 0, math.isqrt(self.cap), out=distance)
        np.multiply(distance, distance, out=distance)
        np.left_shift(distance, self.label_bits, out=out, dtype=self.dtype)
        np.add(out, cell, out=out, dtype=self.dtype)

    def squared_distance(self, keys: np.ndarray) -> np.ndarray:
        return keys >> self.label_bits


def _two_nearest_cells(
    cells: np.ndarray, n_cells: int, pixels: np.ndarray, *, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Measure the squared distances from pixels to their nearest and second-nearest cell.

    Parameters
    ----------
    cells : (Y, X) int32 ndarray
        Cells labelled 1..n_cells, 0 outside them.
    n_cells : int
        Number of cells.
    pixels : (P,) ndarray
        Flat indices of the pixels to measure, all outside the cells.
    cutoff : float
        Exact wherever d1 + d2 < ``cutoff``; elsewhere d1 and d2 are at least
        the true values (saturating near ``cutoff``).

    Returns
    -------
    sq1, sq2 : (P,) ndarray
        d1**2 and d2**2.
    """
    height, width = cells.shape
    # No distance in the image exceeds its diagonal: a shorter reach is exact.
    reach = min(math.ceil(cutoff), math.ceil(math.hypot(height, width)))
    margin = min(reach, height)
    # `reach + 1` zero columns on the right: in the flattened array a cell in
    # another row is then farther than the reach, so it cannot count.
    stride = width + reach + 1
    padded = np.zeros((height, stride), np.int32)
    padded[:, :width] = cells
    keys = _Keys.for_image(n_cells, cap=(reach + 1) ** 2)
    # The row results, with `margin` rows above and below (pass 2 never leaves
    # the arrays) that hold no cell within the reach.
    size = (height + 2 * margin) * stride
    image = slice(margin * stride, (margin + height) * stride)
    first, second = np.empty(size, keys.dtype), np.empty(size, keys.dtype)
    _row_pass(padded.ravel(), n_cells, keys, first[image], second[image])
    for rows, cell in ((first, n_cells + 1), (second, n_cells + 2)):
        rows[: image.start] = rows[image.stop :] = keys.saturated(cell)
    start = pixels + (pixels // width) * (stride - width) + margin * stride
    k1, k2 = _column_pass(first, second, start, stride, margin, keys)
    return keys.squared_distance(k1), keys.squared_distance(k2)


def _row_pass(
    flat: np.ndarray, n_cells: int, keys: _Keys, first: np.ndarray, second: np.ndarray
) -> None:
    """Pass 1: the nearest cell and the nearest other cell of every pixel, along rows.

    ``flat`` is the flattened label image, each row ending in zeros wide enough
    that the runs of other rows lie beyond the reach. Writes into ``first`` and
    ``second`` (as long as ``flat``) the keys of the nearest run and of the
    nearest run of another cell, ordered so that ``first <= second``.
    """
    size = flat.size
    far = math.isqrt(keys.cap) + 1
    index_type = np.int32 if size < 2**30 else np.int64
    starts, ends, cell = _runs(flat, n_cells, far=far, index_type=index_type)
    before, after = _other_cell_runs(cell)
    # The pixels nearest to run j lie between the midpoints of its two gaps,
    # [low, high); their distance to it is max(start - i, i - end, 0).
    bounds = np.empty(len(cell) + 1, index_type)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1] = np.clip((ends[:-1] + starts[1:]) // 2 + 1, 0, size)
    low, high = bounds[:-1], bounds[1:]
    i = np.arange(size, dtype=index_type)
    distance = np.repeat(starts, high - low)
    np.subtract(distance, i, out=distance)
    past_end = np.repeat(ends, high - low)
    np.subtract(i, past_end, out=past_end)
    np.maximum(distance, past_end, out=distance)
    keys.pack(distance, np.repeat(cell, high - low), out=first)
    # The nearest other cell is run `before` on the left or run `after` on the
    # right, whichever is closer: split each stretch where they are equidistant.
    left, right = ends[before], starts[after]
    switch = np.clip((left + right) // 2 + 1, low, high)
    halves = np.column_stack([switch - low, high - switch]).ravel()
    distance = np.repeat(np.column_stack([left, right]).ravel(), halves)
    np.subtract(i, distance, out=distance)
    np.abs(distance, out=distance)
    other = np.repeat(np.column_stack([cell[before], cell[after]]).ravel(), halves)
    keys.pack(distance, other, out=second)
    # Where both are equally far, order them by key, as `_merge` expects.
    swap = np.flatnonzero(first > second)
    first[swap], second[swap] = second[swap], first[swap]


def _runs(
    flat: np.ndarray, n_cells: int, *, far: int, index_type: type
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the runs of nonzero pixels: the first and last index and the cell of each.

    A run of 4-connected labels in one row is one cell. A sentinel run ``far``
    outside each end, with a cell of its own, gives every pixel a run on both
    sides. ``flat`` must end with a zero.
    """
    inside = flat != 0
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    if inside[0]:
        edges = np.concatenate(([0], edges))
    starts, stops = edges[0::2], edges[1::2]
    size = flat.size
    cell = np.concatenate(([n_cells + 1], flat[starts], [n_cells + 2]))
    starts = np.concatenate(([-far], starts, [size - 1 + far]))
    ends = np.concatenate(([-far], stops - 1, [size - 1 + far]))
    return starts.astype(index_type), ends.astype(index_type), cell.astype(index_type)


def _other_cell_runs(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find the nearest run of another cell before and after each run."""
    count = len(cell)
    changes = np.flatnonzero(cell[1:] != cell[:-1])
    first_of_block = np.zeros(count, np.intp)
    first_of_block[changes + 1] = changes + 1
    before = np.maximum(np.maximum.accumulate(first_of_block) - 1, 0)
    last_of_block = np.full(count, count - 1, np.intp)
    last_of_block[changes] = changes
    after = np.minimum(np.minimum.accumulate(last_of_block[::-1])[::-1] + 1, count - 1)
    return before, after


def _column_pass(
    first: np.ndarray,
    second: np.ndarray,
    start: np.ndarray,
    stride: int,
    depth: int,
    keys: _Keys,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: merge the row results of the rows above and below each pixel.

    A row ``dy`` away adds ``dy**2`` to the squared distances it holds, so a
    pixel is done once ``dy**2`` reaches its second-nearest distance, or ``dy``
    reaches ``depth`` (the cut-off, or the image height). The few pixels left
    after the first rows take all their remaining rows at once.
    """
    k1, k2 = first[start], second[start]
    out1, out2 = np.empty_like(k1), np.empty_like(k2)
    # Indices relative to `depth` rows up, so each row is a view: first[row:][at].
    origin = depth * stride
    todo, at = np.arange(len(start)), start - origin
    for dy in range(1, depth):
        going = k2 >= ((dy * dy + 1) << keys.label_bits)
        count = np.count_nonzero(going)
        if count < _COMPACT * len(at) or count * (depth - dy) <= _BATCH:
            stop, go = np.flatnonzero(~going), np.flatnonzero(going)
            done = todo[stop]
            out1[done], out2[done] = k1[stop], k2[stop]
            todo, at, k1, k2 = todo[go], at[go], k1[go], k2[go]
        if count * (depth - dy) <= _BATCH:
            rows = range(dy, depth)
            k1, k2 = _merge_rows(first, second, at + origin, k1, k2, rows, stride, keys)
            break
        # The rows dy above and dy below are equally far: merge them first.
        up, down = origin - dy * stride, origin + dy * stride
        a1, a2 = first[up:][at], second[up:][at]
        _merge(a1, a2, first[down:][at], second[down:][at], keys)
        shift = keys.dtype((dy * dy) << keys.label_bits)
        a1 += shift
        a2 += shift
        _merge(k1, k2, a1, a2, keys)
    out1[todo], out2[todo] = k1, k2
    return out1, out2


def _merge_rows(
    first: np.ndarray,
    second: np.ndarray,
    at: np.ndarray,
    k1: np.ndarray,
    k2: np.ndarray,
    dys: range,
    stride: int,
    keys: _Keys,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the rows ``dys`` above and below into (k1, k2) in one go."""
    dy = np.array(dys)
    offsets = np.concatenate([-dy, dy]) * stride
    shifts = np.tile((dy * dy) << keys.label_bits, 2).astype(keys.dtype)
    rows = at[:, None] + offsets
    candidates = np.concatenate(
        [k1[:, None], k2[:, None], first[rows] + shifts, second[rows] + shifts], axis=1
    )
    nearest = candidates.min(axis=1)
    low = (1 << keys.label_bits) - 1
    candidates[((candidates ^ nearest[:, None]) & low) == 0] = keys.same_cell_flag
    return nearest, candidates.min(axis=1)


def _merge(k1: np.ndarray, k2: np.ndarray, a1: np.ndarray, a2: np.ndarray, keys: _Keys) -> None:
    """Merge the candidates (a1, a2) into the two nearest distinct cells (k1, k2), in place.

    Both pairs are sorted by key and hold two distinct cells (or lie beyond the
    reach), so the new second is the smallest of k2, a2 and the larger of k1,
    a1, the latter only when it is of another cell than the new first.
    ``a2`` is overwritten.
    """
    same = np.bitwise_xor(k1, a1)
    np.bitwise_and(same, (1 << keys.label_bits) - 1, out=same)
    np.minimum(k2, a2, out=k2)
    loser = np.maximum(k1, a1, out=a2)
    np.minimum(k1, a1, out=k1)
    # Push the loser out of the running where it is of the same cell as the winner.
    np.equal(same, 0, out=same, casting="unsafe")
    np.left_shift(same, keys.same_cell_flag.bit_length() - 1, out=same)
    np.bitwise_or(loser, same, out=loser)
    np.minimum(k2, loser, out=k2)
