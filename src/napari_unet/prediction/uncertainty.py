"""Where the model is least sure: an uncertainty map per prediction, and its ranking.

The map is in [0, 1], computed from what prediction already has:

- without test-time augmentation, the **margin** of P(membrane) to the mask's threshold
  (1 at the threshold, 0 where the probability is 0 or 1, linear between);
- with test-time augmentation, the **disagreement** of the 8 flipped and rotated
  predictions (their standard deviation, scaled by its largest value, 1/2).

Either is **weighted towards the crests between cells**: the one-pixel lines where the
cells seeded by the confident interiors meet (`~napari_unet.prediction.postprocess.gap_lines`),
widened by `CREST_RADIUS`, count fully and the rest `FLOOR`. An unsure pixel on a crest
is a membrane that may break and merge two cells; one inside a cell at most adds a speck
that splits nothing.

The margin sees the splits, not the merges: where a faint membrane is missed, the model is
sure of the interior it draws across it, and a stack whose slices lose membranes looks
*surer* (less membrane, fewer unsure pixels). So interior far from any membrane counts as
unsure too (`far_from_membrane`, weighted `FAR_WEIGHT`): more than ``reach`` from a
membrane, rising to full weight at twice that, where ``reach`` is `REACH_FACTOR` times the
median distance from an interior pixel to the nearest membrane in the stack
(`typical_reach`): a cell much wider than its neighbours is where two were likely merged.
A network fed noise is sure and wrong too (the bundled model calls it all interior): a
slice without any membrane counts as far everywhere.
docs/prediction.md has the evidence behind these choices
(benchmarks/bench_active_correction.py).

`rank` scores each slice (the mean of its map) and each square region of a slice, so a
user corrects the slices that pay most first, and looks first where a slice is least sure.
"""

import csv
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
from scipy import ndimage as ndi

from napari_unet.io.stacks import atomic_write
from napari_unet.jobs import drain
from napari_unet.prediction.postprocess import gap_lines

CREST_LEVEL = 0.2
"""Cells are seeded where P(membrane) is at most this (as `gap_lines`)."""
CREST_RADIUS = 2
"""Pixels either side of a crest line that count fully."""
FLOOR = 0.25
"""Weight of the pixels away from every crest."""
REGION = 128
"""Side, in pixels, of the square regions a slice is ranked by."""
REACH_FACTOR = 2.0
"""Interior farther from a membrane than this times the stack's median is unsure."""
REACH_SLICES = 16
"""Slices `typical_reach` measures at most."""
FAR_WEIGHT = 0.5
"""Weight of `far_from_membrane` in the map: a big cell is a likely merge, not a sure one."""


def margin(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Return how close P(membrane) is to the threshold: 1 at it, 0 at 0 and 1.

    Parameters
    ----------
    probabilities : ndarray
        P(membrane) in [0, 1].
    threshold : float
        The mask's threshold, in (0, 1).

    Returns
    -------
    margin : float32 ndarray
        In [0, 1], the shape of ``probabilities``.
    """
    p = np.asarray(probabilities, dtype=np.float32)
    below = p <= threshold
    distance = np.where(below, (threshold - p) / threshold, (p - threshold) / (1 - threshold))
    return np.clip(1 - distance, 0, 1).astype(np.float32)


def disagreement(spread: np.ndarray) -> np.ndarray:
    """Scale the standard deviation of test-time-augmented predictions to [0, 1].

    Values in [0, 1] have a standard deviation of at most 1/2 (half at 0, half at 1).
    """
    return np.clip(2 * np.asarray(spread, dtype=np.float32), 0, 1)


def crest_weight(probabilities: np.ndarray, *, level: float = CREST_LEVEL,
                 radius: int = CREST_RADIUS, floor: float = FLOOR) -> np.ndarray:
    """Return 1 near the crests where the cells of a slice meet, ``floor`` elsewhere.

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) ndarray
        P(membrane); slice by slice.
    level : float
        Cells are seeded where P(membrane) is at most this.
    radius : int
        Pixels either side of a crest line that count fully.
    floor : float
        Weight away from the crests, in [0, 1].

    Returns
    -------
    weight : float32 ndarray
    """
    lines = gap_lines(probabilities, level=level)
    disk = np.ones((2 * radius + 1,) * 2, bool)
    footprint = disk if lines.ndim == 2 else disk[None]
    near = ndi.binary_dilation(lines, structure=footprint)
    return np.where(near, np.float32(1), np.float32(floor))


def far_from_membrane(probabilities: np.ndarray, *, threshold: float, reach: float) -> np.ndarray:
    """Return 0 within ``reach`` of a membrane, rising to 1 at twice that, slice by slice.

    A slice without any membrane is 1 everywhere.

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) ndarray
        P(membrane); membrane above ``threshold``.
    threshold : float
    reach : float
        In pixels (`typical_reach`).

    Returns
    -------
    far : float32 ndarray
    """
    membrane = np.asarray(probabilities) > threshold
    stack = membrane[None] if membrane.ndim == 2 else membrane
    far = np.ones(stack.shape, np.float32)
    for plane, out in zip(stack, far, strict=True):
        if plane.any() and not np.isfinite(reach):
            out[:] = 0
        elif plane.any():
            distance = ndi.distance_transform_edt(~plane)
            out[:] = np.clip((distance - reach) / reach, 0, 1)
    return far[0] if membrane.ndim == 2 else far


def typical_reach(probabilities, *, threshold: float) -> float:
    """Return `REACH_FACTOR` times the median distance from interior to the nearest membrane.

    Measured on at most `REACH_SLICES` slices spread evenly over the stack (so that a
    stack in memory and the same stack read lazily get the same reach), among those
    with both membrane and interior.

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) ndarray or dask array
    threshold : float

    Returns
    -------
    reach : float
        In pixels; infinite when no slice has both (nothing is far then, but a slice
        without membrane, which `far_from_membrane` calls unsure everywhere).
    """
    stack = probabilities[None] if probabilities.ndim == 2 else probabilities
    chosen = np.unique(np.linspace(0, len(stack) - 1, min(len(stack), REACH_SLICES)).round())
    distances = []
    for z in chosen.astype(int):
        membrane = np.asarray(stack[z]) > threshold
        if membrane.any() and not membrane.all():
            distances.append(ndi.distance_transform_edt(~membrane)[~membrane])
    if not distances:
        return float("inf")
    return REACH_FACTOR * float(np.median(np.concatenate(distances)))


def uncertainty_map(probabilities: np.ndarray, *, threshold: float = 0.5,
                    spread: np.ndarray | None = None,
                    reach: float | None = None) -> np.ndarray:
    """Return the uncertainty of a prediction: margin or disagreement, weighted to the crests.

    Parameters
    ----------
    probabilities : (Y, X) or (Z, Y, X) ndarray
        P(membrane).
    threshold : float
        The mask's threshold (for the margin).
    spread : ndarray or None
        The standard deviation of the test-time-augmented predictions, the
        shape of ``probabilities``; None: use the margin.
    reach : float or None
        Interior farther than this from any membrane is unsure too
        (`far_from_membrane`); None: `typical_reach` of ``probabilities``.

    Returns
    -------
    uncertainty : float32 ndarray
        In [0, 1], the shape of ``probabilities``.
    """
    raw = margin(probabilities, threshold) if spread is None else disagreement(spread)
    unsure = raw * crest_weight(probabilities)
    if reach is None:
        reach = typical_reach(probabilities, threshold=threshold)
    far = far_from_membrane(probabilities, threshold=threshold, reach=reach)
    return np.maximum(unsure, FAR_WEIGHT * far)


def lazy_uncertainty(probabilities: da.Array, *, threshold: float,
                     reach: float | None = None) -> da.Array:
    """`uncertainty_map` (the margin) of a lazy (Y, X) or (Z, Y, X) array, whole slice by slice.

    ``reach`` is the stack's (None: its `typical_reach`, measured now, once for all slices).
    """
    if reach is None:
        reach = typical_reach(probabilities, threshold=threshold)
    whole = probabilities.rechunk({-1: -1, -2: -1})
    return whole.map_blocks(uncertainty_map, threshold=threshold, reach=reach, dtype=np.float32)


@dataclass(frozen=True)
class Ranking:
    """Uncertainty per slice and per square region of each slice.

    Attributes
    ----------
    slices : (Z,) float ndarray
        The mean uncertainty of each slice (NaN: a slice not predicted yet).
    regions : (Z, R, C) float ndarray
        The mean uncertainty of each ``region`` x ``region`` square (the last
        row and column may be narrower).
    region : int
        The squares' side, in pixels.
    shape : (2,) tuple of int
        A slice's height and width.
    """

    slices: np.ndarray
    regions: np.ndarray
    region: int
    shape: tuple[int, int]

    @classmethod
    def unknown(cls, depth: int, height: int, width: int, region: int = REGION) -> "Ranking":
        """Return the ranking of a stack none of whose slices is predicted yet."""
        squares = region_sizes(height, width, region).shape
        return cls(np.full(depth, np.nan), np.full((depth, *squares), np.nan), region,
                   (height, width))

    def with_slice(self, z: int, other: "Ranking") -> "Ranking":
        """Return this ranking with slice ``z`` scored as the one slice of ``other``."""
        if other.region != self.region or other.shape != self.shape:
            raise ValueError("rankings of different slice or region sizes")
        slices, regions = self.slices.copy(), self.regions.copy()
        slices[z], regions[z] = other.slices[0], other.regions[0]
        return Ranking(slices, regions, self.region, self.shape)

    def order(self) -> list[int]:
        """Return the predicted slices, least sure first (ties: the lower slice first)."""
        known = np.flatnonzero(~np.isnan(self.slices))
        return [int(z) for z in known[np.argsort(-self.slices[known], kind="stable")]]

    def hotspot(self, z: int) -> tuple[int, int]:
        """Return the (row, column) pixel at the centre of slice ``z``'s least sure square."""
        r, c = np.unravel_index(int(np.nanargmax(self.regions[z])), self.regions[z].shape)
        height, width = self.shape
        return (_centre(int(r), self.region, height), _centre(int(c), self.region, width))

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write one row per slice, least sure first: rank, slice, score, hotspot row and column.

        Written whole or not at all (`napari_unet.io.stacks.atomic_write`).
        """
        def write(tmp):
            with open(tmp, "w", newline="") as file:
                out = csv.writer(file)
                out.writerow(["rank", "slice", "uncertainty", "hotspot_y", "hotspot_x"])
                for place, z in enumerate(self.order(), start=1):
                    y, x = self.hotspot(z)
                    out.writerow([place, z, f"{self.slices[z]:.6f}", y, x])

        return atomic_write(Path(path), write)


def _centre(index: int, region: int, length: int) -> int:
    """Return the middle pixel of square ``index`` along an axis of ``length`` pixels."""
    start = index * region
    return start + min(region, length - start) // 2


def region_means(plane: np.ndarray, region: int) -> np.ndarray:
    """Return the mean of each ``region`` x ``region`` square of a (Y, X) plane."""
    height, width = plane.shape
    sums = np.add.reduceat(np.add.reduceat(plane.astype(np.float64), np.arange(0, height, region),
                                           axis=0), np.arange(0, width, region), axis=1)
    return sums / region_sizes(height, width, region)


def region_sizes(height: int, width: int, region: int) -> np.ndarray:
    """Return the pixels in each square of `region_means` (the last ones may be narrower)."""
    return np.outer(np.diff([*range(0, height, region), height]),
                    np.diff([*range(0, width, region), width]))


@dataclass(frozen=True)
class RankProgress:
    """Slices ranked so far, of how many."""

    done: int
    total: int


def rank_slices(uncertainty, *, region: int = REGION) -> Generator[RankProgress, None, Ranking]:
    """Score each slice and each square region of an uncertainty map, slice by slice.

    Parameters
    ----------
    uncertainty : (Y, X) or (Z, Y, X) ndarray or dask array
        From `uncertainty_map` (or `lazy_uncertainty`: read and computed one slice
        at a time).
    region : int
        Side of the squares, in pixels.

    Yields
    ------
    progress : RankProgress
        After every slice.

    Returns
    -------
    ranking : Ranking
    """
    stack = uncertainty[None] if uncertainty.ndim == 2 else uncertainty
    sizes = region_sizes(stack.shape[1], stack.shape[2], region)
    regions = np.empty((len(stack), *sizes.shape))
    for z in range(len(stack)):
        regions[z] = region_means(np.asarray(stack[z]), region)
        yield RankProgress(z + 1, len(stack))
    slices = (regions * sizes).sum(axis=(1, 2)) / sizes.sum()
    return Ranking(slices, regions, region, (int(stack.shape[1]), int(stack.shape[2])))


def rank(uncertainty, *, region: int = REGION) -> Ranking:
    """Run `rank_slices` to the end (for maps in memory)."""
    return drain(rank_slices(uncertainty, region=region))
