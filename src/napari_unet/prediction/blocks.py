"""Blocks of a volume and their aligned tiles: the plan, and the prediction of one block.

A (Z, Y, X) volume is cut into blocks of ``k`` slices by a Y/X chunk
(`plan_blocks`). Along Y and X each block is covered by output tiles whose
origins are multiples of ``2**(depth - 1)`` in volume coordinates
(`AxisTiles`), so every pixel gets the same result whatever the block and tile
sizes. `predict_block` predicts one block from the raw box of input its tiles
need (`Block.read`), mirrored at the volume's borders, and writes it into its
own chunk of the output zarr array; `BlockTask` is what it needs besides the
block, small and picklable, so blocks can run as tasks on other machines.
"""

import functools
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from napari_unet.model.files import load_model
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.predict import predict_tiles
from napari_unet.prediction.tiles import TilePlan, mirror_indices


@dataclass(frozen=True)
class AxisTiles:
    """Output tiles covering ``start:stop`` of one axis, from an aligned origin.

    Attributes
    ----------
    start, stop : int
        The block's extent along the axis.
    first : int
        Origin of the first output tile (``start`` rounded down to the alignment).
    step : int
        Output pixels kept per tile (a multiple of the alignment).
    count : int
        Tiles.
    plan : TilePlan
        Network input side, output side and offset for ``step``.
    """

    start: int
    stop: int
    first: int
    step: int
    count: int
    plan: TilePlan

    @classmethod
    def cover(cls, start: int, stop: int, *, plan: TilePlan, model: UNet) -> "AxisTiles":
        """Cover ``start:stop`` with equal tiles of at most ``plan.output`` pixels on its grid."""
        first = start - start % plan.grid
        count = -(-(stop - first) // plan.output)
        step = _round_up(-(-(stop - first) // count), plan.grid)
        return cls(start, stop, first, step, count, TilePlan.for_prediction(model, step))

    def indices(self, length: int) -> np.ndarray:
        """Return the input pixels the tiles read, mirrored into an axis of ``length``."""
        span = (self.count - 1) * self.step + self.plan.input
        return mirror_indices(self.first - self.plan.halo, span, length)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Block:
    """Slices ``z0:z1`` by the extents of ``y`` and ``x`` of a (Z, Y, X) volume."""

    index: int
    z0: int
    z1: int
    y: AxisTiles
    x: AxisTiles
    height: int
    width: int

    def read(self) -> tuple[slice, slice, slice]:
        """Return the bounding box of the input pixels the block's tiles need."""
        rows, cols = self.y.indices(self.height), self.x.indices(self.width)
        return (slice(self.z0, self.z1), slice(int(rows.min()), int(rows.max()) + 1),
                slice(int(cols.min()), int(cols.max()) + 1))

    def window(self, raw: np.ndarray) -> np.ndarray:
        """Arrange the bounding box `read` returned into the mirrored window of the tiles."""
        rows, cols = self.y.indices(self.height), self.x.indices(self.width)
        return raw[:, rows - rows.min()][:, :, cols - cols.min()]

    def target(self) -> tuple[slice, slice, slice]:
        """Return where the block goes in the (Z, Y, X) output."""
        return (slice(self.z0, self.z1), slice(self.y.start, self.y.stop),
                slice(self.x.start, self.x.stop))


def plan_blocks(shape: tuple[int, int, int], block: tuple[int, int, int], model: UNet,
                *, tile: int) -> list[Block]:
    """Cut a (Z, Y, X) volume into blocks and plan each block's aligned tiles.

    Parameters
    ----------
    shape : (3,) tuple of int
    block : (3,) tuple of int
        Slices, rows and columns per block (smaller at the volume's far edges).
    model : UNet
    tile : int
        Output tile side to aim for (as in `predict`).

    Returns
    -------
    blocks : list of Block
    """
    plan = TilePlan.for_prediction(model, tile)
    depth, height, width = shape
    cover = functools.partial(AxisTiles.cover, plan=plan, model=model)
    rows = [cover(y, min(y + block[1], height)) for y in range(0, height, block[1])]
    cols = [cover(x, min(x + block[2], width)) for x in range(0, width, block[2])]
    spans = [(z, min(z + block[0], depth)) for z in range(0, depth, block[0])]
    grid = [(z, y, x) for z in spans for y in rows for x in cols]
    return [Block(i, z0, z1, y, x, height, width) for i, ((z0, z1), y, x) in enumerate(grid)]


# -- one block --------------------------------------------------------------------


@dataclass(frozen=True)
class BlockTask:
    """What a worker needs besides the block: small and picklable.

    Attributes
    ----------
    model_path : str
    model_stamp : int
        Modification time of the model file (ns), so a rewritten file is reloaded.
    output : str
        The zarr array the blocks are written to.
    squeeze : bool
        The output is (Y, X): drop the slice axis when writing.
    device : str
    batch_size : int
    autocast_dtype : torch.dtype or None
    tta : bool
    """

    model_path: str
    model_stamp: int
    output: str
    squeeze: bool
    device: str
    batch_size: int
    autocast_dtype: torch.dtype | None
    tta: bool


@functools.lru_cache(maxsize=2)
def cached_network(path: str, stamp: int, device: str) -> tuple[UNet, Normalization]:
    """Load a model file once per process (``stamp`` keys the cache to the file's version)."""
    model_file = load_model(path, map_location=device)
    return model_file.build_model().to(device), model_file.normalization


def predict_block(task: BlockTask, raw: np.ndarray, block: Block) -> int:
    """Predict one block from its raw input box and write it to the output.

    Parameters
    ----------
    task : BlockTask
    raw : (k, h, w) ndarray
        ``volume[block.read()]``.
    block : Block

    Returns
    -------
    index : int
        The block's number.
    """
    model, normalization = cached_network(task.model_path, task.model_stamp, task.device)
    unit = normalization.unit(block.window(np.asarray(raw)))
    probabilities = _predict_tiles(model, unit, normalization, block, task)
    if task.squeeze:
        zarr.open_array(task.output, mode="r+")[block.target()[1:]] = probabilities[0]
    else:
        zarr.open_array(task.output, mode="r+")[block.target()] = probabilities
    return block.index


def _predict_tiles(model: UNet, unit: np.ndarray, normalization: Normalization, block: Block,
                   task: BlockTask) -> np.ndarray:
    """P(membrane) of a block from its mirrored [0, 1] window, tile batch by tile batch."""
    y, x = block.y, block.x
    jobs = [(z, i, j) for z in range(len(unit)) for i in range(y.count) for j in range(x.count)]
    result = np.empty((len(unit), y.count * y.step, x.count * x.step), dtype=np.float32)
    for start in range(0, len(jobs), task.batch_size):
        batch = jobs[start:start + task.batch_size]
        tiles = np.stack([unit[z, i * y.step:i * y.step + y.plan.input,
                               j * x.step:j * x.step + x.plan.input] for z, i, j in batch])
        probs = predict_tiles(model, tiles, normalization, device=task.device,
                              autocast_dtype=task.autocast_dtype, tta=task.tta)
        oy, ox = y.plan.offset, x.plan.offset
        for (z, i, j), p in zip(batch, probs, strict=True):
            top, left = i * y.step, j * x.step
            result[z, top:top + y.step, left:left + x.step] = p[oy:oy + y.step, ox:ox + x.step]
    return result[:, y.start - y.first:y.stop - y.first, x.start - x.first:x.stop - x.first]
