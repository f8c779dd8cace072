"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2).

A slice is mirror-padded, cut into input tiles whose outputs tile the slice
exactly, and the outputs are pasted back. A valid-padding network sees, for
every output pixel, the same context wherever the tile boundaries fall, so the
result does not depend on the tile size. A same-padding network gets extra
context around each tile, which is cropped away from its output. Tiles of all
slices are batched together; `predict` yields progress after every batch.
"""

from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .data import Normalization, mirror_crop
from .jobs import drain
from .model import UNet

SAME_CONTEXT = 32
"""Context (pixels per side) added around the tiles of a same-padding network."""


@dataclass(frozen=True)
class TilePlan:
    """Input side, output side kept, and the offset of the kept part in the network output."""

    input: int
    output: int
    offset: int

    @classmethod
    def for_model(cls, model: UNet, tile: int) -> "TilePlan":
        """Plan tiles whose kept outputs are at least ``tile`` pixels on a side."""
        if model.padding == "valid":
            size = model.input_size_for(tile)
            return cls(input=size, output=model.output_size(size), offset=0)
        size = model.input_size_for(tile + 2 * SAME_CONTEXT)
        return cls(input=size, output=size - 2 * SAME_CONTEXT, offset=SAME_CONTEXT)

    @property
    def margin(self) -> int:
        """Input pixels before the first kept output pixel."""
        return (self.input - self.output) // 2


@dataclass(frozen=True)
class PredictProgress:
    """Tiles predicted so far, of how many."""

    done: int
    total: int


def output_tile(model: UNet, tile: int) -> int:
    """Return the output tile side `predict` uses when asked for ``tile``.

    The network's output for the smallest input covering ``tile`` (`TilePlan`),
    cut down to the poolings' grid (multiples of ``2**(depth - 1)``), where every
    tile starts.

    Parameters
    ----------
    model : UNet
    tile : int
        Requested output tile side, >= 1.

    Returns
    -------
    side : int
    """
    step = 2 ** (model.depth - 1)
    return max(step, TilePlan.for_model(model, tile).output // step * step)


def tile_origins(length: int, tile: int) -> list[int]:
    """Origins of output tiles that cover ``length`` pixels: multiples of ``tile``.

    The last tile may run past the edge into the mirrored border; its surplus is
    dropped. Keeping every origin on the same grid keeps every tile's 2x2 poolings
    in phase, so the result does not depend on the tile size.
    """
    return list(range(0, length, tile))


def _dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Apply the k-th symmetry of the square (k < 4: rotations; k >= 4: flip, then rotate)."""
    if not inverse:
        x = torch.flip(x, dims=(-1,)) if k >= 4 else x
        return torch.rot90(x, k % 4, dims=(-2, -1))
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _forward(model, inputs, autocast_dtype, tta: bool) -> torch.Tensor:
    """P(membrane) of a batch of tiles, averaged over the 8 symmetries with ``tta``."""
    device_type = inputs.device.type
    total = 0
    for k in range(8 if tta else 1):
        with torch.autocast(device_type=device_type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            logits = model(_dihedral(inputs, k))
        total = total + _dihedral(torch.softmax(logits.float(), dim=1)[:, 1], k, inverse=True)
    return total / (8 if tta else 1)


@torch.no_grad()
def predict(
    model: UNet,
    unit_image: np.ndarray,
    normalization: Normalization,
    *,
    tile: int = 388,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    tta: bool = False,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict P(membrane) by overlap-tiling, yielding progress after every batch of tiles.

    Parameters
    ----------
    model : UNet
        Two-class network (channel 1 = membrane); run in eval mode.
    unit_image : (Y, X) or (Z, Y, X) float32 ndarray
        The image mapped to [0, 1] (`Normalization.unit`); stacks go slice by slice.
    normalization : Normalization
    tile : int
        Output tile side to aim for (the paper's 388 by default).
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
    autocast_dtype : torch.dtype or None
        Mixed precision (bf16 on CUDA).
    tta : bool
        Average over the 8 flips and rotations of each tile (8x the work).

    Yields
    ------
    progress : PredictProgress

    Returns
    -------
    probabilities : float32 ndarray
        In [0, 1], the shape of ``unit_image``.
    """
    stack = unit_image[None] if unit_image.ndim == 2 else unit_image
    plan = TilePlan.for_model(model, tile)
    height, width = stack.shape[1:]
    out_tile = output_tile(model, tile)  # on the poolings' grid: tiles start on it
    rows, cols = tile_origins(height, out_tile), tile_origins(width, out_tile)
    jobs = [(z, y, x) for z in range(len(stack)) for y in rows for x in cols]
    result = np.zeros(stack.shape, dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for done, batch in _batches(jobs, batch_size):
            tiles = np.stack([mirror_crop(stack[z], y - plan.margin, x - plan.margin,
                                          plan.input, plan.input) for z, y, x in batch])
            inputs = torch.from_numpy(normalization.network(tiles)[:, None]).to(device)
            if inputs.device.type == "cuda":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            probs = _forward(model, inputs, autocast_dtype, tta).cpu().numpy()
            o = plan.offset
            for (z, y, x), p in zip(batch, probs, strict=True):
                h, w = min(out_tile, height - y), min(out_tile, width - x)
                result[z, y:y + h, x:x + w] = p[o:o + h, o:o + w]
            yield PredictProgress(done, len(jobs))
    finally:
        model.train(was_training)
    return result[0] if unit_image.ndim == 2 else result


def _batches(jobs: list, size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(jobs), size):
        batch = jobs[start:start + size]
        yield start + len(batch), batch


def predict_probabilities(model, unit_image, normalization, **options) -> np.ndarray:
    """Run `predict` to the end and return the probabilities (for scripts and validation)."""
    return drain(predict(model, unit_image, normalization, **options))
