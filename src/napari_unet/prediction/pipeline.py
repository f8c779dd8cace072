"""Prediction jobs that both fronts drive: a stack in memory, or a volume block by block.

Each job is a generator: it yields small progress records and returns its
result. ``napari-unet predict`` drains it with a progress bar
(`napari_unet.jobs.drain`); the Prediction widget runs the same generator in a
worker thread and puts the result into layers.
"""

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_unet.devices import using_cpu_threads
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.postprocess import cell_labels, membrane_mask
from napari_unet.prediction.predict import PredictProgress, predict
from napari_unet.prediction.volume import VolumeProgress, predict_volume


@dataclass(frozen=True)
class Prediction:
    """What a prediction job returns: P(membrane), annotation mask and cells (or None)."""

    probabilities: np.ndarray
    mask: np.ndarray
    cells: np.ndarray | None


@dataclass(frozen=True)
class PostProgress:
    """A post-processing step that starts now, once every tile is predicted.

    Attributes
    ----------
    step : {'mask', 'cells'}
        Thresholding (and closing gaps), or labelling the cells.
    done, total : int
        1 of 1: every tile is done, so a front that shows only ``done`` of
        ``total`` (as for `PredictProgress`) shows a full bar.
    """

    step: str
    done: int = 1
    total: int = 1


def prediction_job(
    model: UNet,
    unit_image: np.ndarray,
    normalization: Normalization,
    *,
    threshold: float,
    min_size: int | None,
    device: torch.device,
    close_gaps: float | None = None,
    **options,
) -> Generator[PredictProgress | PostProgress, None, Prediction]:
    """Predict, then threshold and (when ``min_size`` is not None) label cells.

    Parameters
    ----------
    model : UNet
    unit_image : (Y, X) or (Z, Y, X) float32 ndarray
        The image mapped to [0, 1].
    normalization : Normalization
    threshold : float
        Membrane where P(membrane) is above it.
    min_size : int or None
        Smallest cell seed, in pixels; None: no cells.
    device : torch.device
        Where the network runs; on the CPU with `napari_unet.devices.cpu_threads`
        threads (a core stays free when a GUI runs in this process).
    close_gaps : float or None
        Close the mask's gaps (`napari_unet.prediction.postprocess.membrane_mask`); None: off.
    **options
        More keyword arguments of `napari_unet.prediction.predict.predict` (tile,
        batch_size, autocast_dtype, tta).

    Yields
    ------
    progress : PredictProgress or PostProgress
        After every batch of tiles, then before each post-processing step.

    Returns
    -------
    prediction : Prediction
    """
    with using_cpu_threads(device):
        prob = yield from predict(model.to(device), unit_image, normalization, device=device,
                                  **options)
    yield PostProgress("mask")
    mask = membrane_mask(prob, threshold=threshold, close_gaps=close_gaps)
    cells = None
    if min_size is not None:
        yield PostProgress("cells")
        cells = cell_labels(prob, threshold=threshold, min_size=min_size)
    return Prediction(prob, mask, cells)


def volume_job(
    model_path: str | os.PathLike,
    volume,
    output: str | os.PathLike,
    *,
    device: torch.device,
    **options,
) -> Generator[VolumeProgress, None, Path]:
    """Predict a lazy volume block by block into a zarr folder.

    Parameters
    ----------
    model_path : str or PathLike
        A model file, or a bundled model's name.
    volume : dask array, zarr array, ndarray, str or PathLike
        (Y, X) or (Z, Y, X) image (`napari_unet.io.lazy.open_lazy`).
    output : str or PathLike
        The zarr folder of P(membrane) to write.
    device : torch.device
        As for `prediction_job`.
    **options
        More keyword arguments of `napari_unet.prediction.volume.predict_volume` (tile,
        batch_size, block, autocast_dtype, tta, client, overwrite).

    Yields
    ------
    progress : VolumeProgress

    Returns
    -------
    path : Path
        The zarr array of P(membrane).
    """
    with using_cpu_threads(device):
        return (yield from predict_volume(model_path, volume, output, device=str(device),
                                          **options))
