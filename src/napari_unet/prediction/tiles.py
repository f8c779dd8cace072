"""The tile plan: how a U-Net cuts a slice into tiles (Ronneberger et al. 2015, Fig. 2).

Training, validation and prediction (in memory and blockwise) all take their
tile sizes from one `TilePlan`. A valid-padding network labels a smaller
output than the input it sees (388 of 572 in the paper): the input tile
reaches ``halo`` pixels beyond the output on each side. A same-padding network
keeps the input's size, but its outputs are poor near the tile border, so
prediction gives each tile `SAME_CONTEXT` extra pixels per side and crops them
away; training needs no such margin, since the loss sees the whole output.

Prediction tiles start on multiples of the poolings' step ``2**(depth - 1)``
(the plan's ``grid``): every tile's 2x2 poolings are then in phase, and the
result does not depend on the tile size.
"""

from dataclasses import dataclass

import numpy as np

from napari_unet.checks import check_positive
from napari_unet.model.sizes import input_size_for, output_size

SAME_CONTEXT = 32
"""Context (pixels per side) added around the prediction tiles of a same-padding network."""


@dataclass(frozen=True)
class TilePlan:
    """The sizes of one tile, for a network of a given depth and padding.

    Make one with `for_training` or `for_prediction`, from a `UNet` or a
    `ModelConfig` (anything with ``depth`` and ``padding``).

    Attributes
    ----------
    input : int
        Side of the network's input tile.
    output : int
        Side of the output kept from each tile (what the loss sees, or what a
        prediction pastes back).
    halo : int
        Input pixels on each side beyond the kept output: a tile whose kept
        output starts at ``y`` reads its input from ``y - halo``.
    offset : int
        Where the kept output starts in the network's output (the context a
        same-padding network's prediction crops away; else 0).
    grid : int
        ``2**(depth - 1)``: prediction tiles start, and their kept outputs end,
        on multiples of it.
    """

    input: int
    output: int
    halo: int
    offset: int
    grid: int

    @classmethod
    def for_training(cls, network, tile: int) -> "TilePlan":
        """Plan the training tiles: the smallest input whose whole output covers ``tile``.

        Parameters
        ----------
        network : UNet or ModelConfig
            Its ``depth`` and ``padding``.
        tile : int
            Output side asked for (``train.tile``), >= 1.

        Returns
        -------
        plan : TilePlan
            ``output`` is the network's output side for ``input`` (``tile``
            rounded up to a side the network can use).
        """
        depth, padding = network.depth, network.padding
        size = input_size_for(check_positive(tile, name="tile"), depth=depth, padding=padding)
        out = output_size(size, depth=depth, padding=padding)
        return cls(input=size, output=out, halo=(size - out) // 2, offset=0, grid=2 ** (depth - 1))

    @classmethod
    def for_prediction(cls, network, tile: int) -> "TilePlan":
        """Plan the prediction tiles for an output tile of about ``tile`` pixels.

        The smallest input whose output covers ``tile`` (at least one ``grid``
        step) plus the context of a same-padding network; the kept output is
        cut down to the grid.

        Parameters
        ----------
        network : UNet or ModelConfig
            Its ``depth`` and ``padding``.
        tile : int
            Output side asked for, >= 1.

        Returns
        -------
        plan : TilePlan
        """
        depth, padding = network.depth, network.padding
        grid = 2 ** (depth - 1)
        context = SAME_CONTEXT if padding == "same" else 0
        wanted = max(check_positive(tile, name="tile"), grid) + 2 * context
        size = input_size_for(wanted, depth=depth, padding=padding)
        out = output_size(size, depth=depth, padding=padding)
        return cls(input=size, output=(out - 2 * context) // grid * grid,
                   halo=(size - out) // 2 + context, offset=context, grid=grid)

def tile_origins(length: int, tile: int) -> list[int]:
    """Origins of output tiles that cover ``length`` pixels: multiples of ``tile``.

    The last tile may run past the edge into the mirrored border; its surplus is
    dropped. With ``tile`` a `TilePlan`'s ``output`` (a multiple of its grid),
    every tile's 2x2 poolings are in phase.
    """
    return list(range(0, length, tile))


def default_tile(config) -> int:
    """Return the output tile a model predicts with unless told otherwise: its training tile.

    Parameters
    ----------
    config : Config
        The model file's configuration (`ModelFile.config`).

    Returns
    -------
    tile : int
    """
    return config.train.tile


def mirror_indices(start: int, size: int, length: int) -> np.ndarray:
    """Return indices ``start .. start + size`` into an axis of ``length``, mirrored at both ends.

    Mirroring is that of the paper's Fig. 2 (and ``np.pad(mode='reflect')``):
    the edge pixel is not repeated.
    """
    index = np.arange(start, start + size)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.mod(index, period)
    return np.where(index < length, index, period - index)


def mirror_crop(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Cut ``array[top:top+height, left:left+width]``, mirroring whatever lies outside."""
    rows = mirror_indices(top, height, array.shape[0])
    cols = mirror_indices(left, width, array.shape[1])
    return array[np.ix_(rows, cols)]
