"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2).

The slice is mirror-padded, cut into input tiles whose outputs tile the slice
exactly, and the outputs are pasted back. A valid-padding network sees, for
every output pixel, the same context wherever the tile boundaries fall, so the
result does not depend on the tile size. A same-padding network gets extra
context around each tile, which is cropped away from its output.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .data import Normalization, mirror_crop
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


def tile_origins(length: int, tile: int) -> list[int]:
    """Origins of output tiles that cover ``length`` pixels; the last one ends at the edge."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile), length - tile]


@torch.no_grad()
def predict_probabilities(
    model: UNet,
    unit_image: np.ndarray,
    normalization: Normalization,
    *,
    tile: int = 388,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Predict P(membrane) for one slice by overlap-tiling.

    Parameters
    ----------
    model : UNet
        Two-class network (channel 1 = membrane); evaluated in eval mode.
    unit_image : (Y, X) float32 ndarray
        The slice mapped to [0, 1] (`Normalization.unit`).
    normalization : Normalization
    tile : int
        Output tile side to aim for.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
    autocast_dtype : torch.dtype or None
        Mixed precision (CUDA).

    Returns
    -------
    probabilities : (Y, X) float32 ndarray
        In [0, 1]; the same shape as the slice.
    """
    plan = TilePlan.for_model(model, tile)
    height, width = unit_image.shape
    out_tile = min(plan.output, max(height, width))
    network_image = normalization.network(unit_image)
    rows, cols = tile_origins(height, out_tile), tile_origins(width, out_tile)
    origins = [(y, x) for y in rows for x in cols]
    result = np.zeros((height, width), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(origins), batch_size):
            batch = origins[start:start + batch_size]
            tiles = np.stack([mirror_crop(network_image, y - plan.margin, x - plan.margin,
                                          plan.input, plan.input) for y, x in batch])
            inputs = torch.from_numpy(tiles[:, None]).to(device)
            with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = model(inputs)
            probs = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
            o = plan.offset
            for (y, x), p in zip(batch, probs, strict=True):
                h, w = min(out_tile, height - y), min(out_tile, width - x)
                result[y:y + h, x:x + w] = p[o:o + h, o:o + w]
    finally:
        model.train(was_training)
    return result
