"""Overlap-tile prediction (Ronneberger et al. 2015, Fig. 2).

A slice is mirror-padded, cut into input tiles whose outputs tile the slice
exactly, and the outputs are pasted back; the sizes are those of
`~napari_unet.prediction.tiles.TilePlan.for_prediction`. A valid-padding network sees, for
every output pixel, the same context wherever the tile boundaries fall, so the
result does not depend on the tile size. A same-padding network gets extra
context around each tile, which is cropped away from its output. Tiles of all
slices are batched together; `predict` yields progress after every batch, and
`predict_tiles` is the forward pass it shares with blockwise prediction.
"""

from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.jobs import drain
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.tiles import TilePlan, mirror_crop, tile_origins


@dataclass(frozen=True)
class PredictProgress:
    """Tiles predicted so far, of how many."""

    done: int
    total: int


def _dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Apply the k-th symmetry of the square (k < 4: rotations; k >= 4: flip, then rotate)."""
    if not inverse:
        x = torch.flip(x, dims=(-1,)) if k >= 4 else x
        return torch.rot90(x, k % 4, dims=(-2, -1))
    x = torch.rot90(x, -(k % 4), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _forward(model, inputs, autocast_dtype, tta: bool,
             spread: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """P(membrane) of a batch of tiles, averaged over the 8 symmetries with ``tta``.

    With ``spread`` (and ``tta``), also the standard deviation of the 8 predictions.
    """
    device_type = inputs.device.type
    views = 8 if tta else 1
    total = squares = 0
    for k in range(views):
        with torch.autocast(device_type=device_type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            logits = model(_dihedral(inputs, k))
        p = _dihedral(torch.softmax(logits.float(), dim=1)[:, 1], k, inverse=True)
        total = total + p
        squares = squares + p * p if spread else squares
    mean = total / views
    if not spread:
        return mean
    return mean, torch.sqrt(torch.clamp(squares / views - mean * mean, min=0))


@torch.inference_mode()
def predict_tiles(
    model: UNet,
    tiles: np.ndarray,
    normalization: Normalization,
    *,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    tta: bool = False,
    spread: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predict P(membrane) of a batch of input tiles: the network's whole output for each.

    The one forward pass of in-memory (`predict`) and blockwise
    (`napari_unet.prediction.volume.predict_volume`) prediction; each keeps the part of
    the output its `~napari_unet.prediction.tiles.TilePlan` says (from ``offset``, ``output``
    pixels a side).

    Parameters
    ----------
    model : UNet
        Two-class network (channel 1 = membrane), in eval mode.
    tiles : (N, H, W) float32 ndarray
        Input tiles mapped to [0, 1] (`Normalization.unit`); H and W are sides
        the network takes (a `TilePlan`'s ``input``).
    normalization : Normalization
    device : torch.device or str
    autocast_dtype : torch.dtype or None
        Mixed precision (bf16 on CUDA).
    tta : bool
        Average over the 8 flips and rotations of each tile (8x the work).
    spread : bool
        Also return the standard deviation of the 8 predictions (needs ``tta``).

    Returns
    -------
    probabilities : (N, h, w) float32 ndarray
        In [0, 1]; h and w are the network's output sides for H and W.
    spread : (N, h, w) float32 ndarray
        With ``spread`` only.
    """
    if spread and not tta:
        raise ValueError("the spread of predictions needs test-time augmentation (tta=True)")
    inputs = torch.from_numpy(normalization.network(tiles)[:, None]).to(device)
    if inputs.device.type == "cuda":
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    out = _forward(model, inputs, autocast_dtype, tta, spread)
    if spread:
        return out[0].cpu().numpy(), out[1].cpu().numpy()
    return out.cpu().numpy()


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
    spread: bool = False,
) -> Generator[PredictProgress, None, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Predict P(membrane) by overlap-tiling, yielding progress after every batch of tiles.

    Parameters
    ----------
    model : UNet
        Two-class network (channel 1 = membrane); run in eval mode.
    unit_image : (Y, X) or (Z, Y, X) float32 ndarray
        The image mapped to [0, 1] (`Normalization.unit`); stacks go slice by slice.
    normalization : Normalization
    tile : int
        Output tile side to aim for (the paper's 388 by default); the tiles are
        those of `TilePlan.for_prediction`.
    batch_size : int
        Tiles per forward pass.
    device : torch.device or str
    autocast_dtype : torch.dtype or None
        Mixed precision (bf16 on CUDA).
    tta : bool
        Average over the 8 flips and rotations of each tile (8x the work).
    spread : bool
        Also return the standard deviation of the 8 predictions (needs ``tta``), for
        `napari_unet.prediction.uncertainty.disagreement`.

    Yields
    ------
    progress : PredictProgress

    Returns
    -------
    probabilities : float32 ndarray
        In [0, 1], the shape of ``unit_image``.
    spread : float32 ndarray
        With ``spread`` only: the shape of ``unit_image``.
    """
    stack = unit_image[None] if unit_image.ndim == 2 else unit_image
    plan = TilePlan.for_prediction(model, tile)
    height, width = stack.shape[1:]
    side, o = plan.output, plan.offset
    rows, cols = tile_origins(height, side), tile_origins(width, side)
    jobs = [(z, y, x) for z in range(len(stack)) for y in rows for x in cols]
    result = np.zeros(stack.shape, dtype=np.float32)
    spreads = np.zeros(stack.shape, dtype=np.float32) if spread else None
    was_training = model.training
    model.eval()
    try:
        for done, batch in _batches(jobs, batch_size):
            tiles = np.stack([mirror_crop(stack[z], y - plan.halo, x - plan.halo,
                                          plan.input, plan.input) for z, y, x in batch])
            out = predict_tiles(model, tiles, normalization, device=device,
                                autocast_dtype=autocast_dtype, tta=tta, spread=spread)
            pairs = zip((result, spreads), out, strict=True) if spread else [(result, out)]
            for target, values in pairs:
                for (z, y, x), p in zip(batch, values, strict=True):
                    h, w = min(side, height - y), min(side, width - x)
                    target[z, y:y + h, x:x + w] = p[o:o + h, o:o + w]
            yield PredictProgress(done, len(jobs))
    finally:
        model.train(was_training)
    if unit_image.ndim == 2:
        result, spreads = result[0], None if spreads is None else spreads[0]
    return (result, spreads) if spread else result


def _batches(jobs: list, size: int) -> Iterator[tuple[int, list]]:
    for start in range(0, len(jobs), size):
        batch = jobs[start:start + size]
        yield start + len(batch), batch


def predict_probabilities(model, unit_image, normalization, **options) -> np.ndarray:
    """Run `predict` to the end and return the probabilities (for scripts and validation)."""
    return drain(predict(model, unit_image, normalization, **options))
