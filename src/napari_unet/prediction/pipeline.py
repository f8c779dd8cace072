"""Prediction jobs that both fronts drive: a stack in memory, or a volume block by block.

Each job is a generator: it yields small progress records and returns its
result. ``napari-unet predict`` drains it with a progress bar
(`napari_unet.jobs.drain`); the Prediction widget runs the same generator in a
worker thread and puts the result into layers.

A model is opened with `open_model`: a model file, a bundled model's name, or a
bioimage.io package. napari-unet's own packages open as the `ModelFile` they
were written from and predict through the same tiled path; packages of other
tools open as a `~napari_unet.prediction.foreign.ForeignModel` and predict
through bioimageio.core (`image_job` takes either).
"""

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import torch

from napari_unet.devices import using_cpu_threads
from napari_unet.errors import InputError
from napari_unet.model.files import ModelFile, load_model, model_path
from napari_unet.model.normalization import Normalization
from napari_unet.model.package import is_package, open_package, own_model_file
from napari_unet.model.unet import UNet
from napari_unet.prediction.foreign import ForeignModel, open_foreign, predict_foreign
from napari_unet.prediction.postprocess import cell_labels, membrane_mask
from napari_unet.prediction.predict import PredictProgress, predict
from napari_unet.prediction.tiles import default_tile
from napari_unet.prediction.uncertainty import (
    Ranking,
    RankProgress,
    lazy_uncertainty,
    rank,
    rank_slices,
    typical_reach,
    uncertainty_map,
)
from napari_unet.prediction.volume import VolumeProgress, predict_volume


@dataclass(frozen=True)
class Prediction:
    """What a prediction job returns.

    Attributes
    ----------
    probabilities : float32 ndarray
        P(membrane).
    mask : uint8 ndarray
        Annotation labels (1 = membrane, 2 = interior).
    cells : int32 ndarray or None
        Cell labels, when asked for.
    uncertainty : float32 ndarray or None
        In [0, 1] (`napari_unet.prediction.uncertainty.uncertainty_map`), when asked for.
    ranking : Ranking or None
        The slices and their regions scored by ``uncertainty``.
    """

    probabilities: np.ndarray
    mask: np.ndarray
    cells: np.ndarray | None
    uncertainty: np.ndarray | None = None
    ranking: Ranking | None = None


@dataclass(frozen=True)
class PostProgress:
    """A post-processing step that starts now, once every tile is predicted.

    Attributes
    ----------
    step : {'mask', 'uncertainty', 'cells'}
        Thresholding (and closing gaps), the uncertainty map and its ranking, or
        labelling the cells.
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
    uncertainty: bool = True,
    **options,
) -> Generator[PredictProgress | PostProgress, None, Prediction]:
    """Predict, then threshold, map the uncertainty and (when ``min_size`` is set) label cells.

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
    uncertainty : bool
        Map the uncertainty and rank the slices by it (with ``tta``: the disagreement
        of the 8 predictions).
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
    spread = uncertainty and bool(options.get("tta"))
    with using_cpu_threads(device):
        out = yield from predict(model.to(device), unit_image, normalization, device=device,
                                 spread=spread, **options)
    prob, spread = out if spread else (out, None)
    return (yield from _postprocess(prob, threshold, close_gaps, min_size, uncertainty, spread))


def _postprocess(prob: np.ndarray, threshold: float, close_gaps: float | None,
                 min_size: int | None, uncertainty: bool,
                 spread: np.ndarray | None = None) -> Generator[PostProgress, None, Prediction]:
    """Mask, then (with ``uncertainty``) the map, from ``spread`` when given, then cells."""
    yield PostProgress("mask")
    mask = membrane_mask(prob, threshold=threshold, close_gaps=close_gaps)
    unsure = ranking = None
    if uncertainty:
        yield PostProgress("uncertainty")
        unsure = uncertainty_map(prob, threshold=threshold, spread=spread)
        ranking = rank(unsure)
    cells = None
    if min_size is not None:
        yield PostProgress("cells")
        cells = cell_labels(prob, threshold=threshold, min_size=min_size)
    return Prediction(prob, mask, cells, unsure, ranking)


def open_model(model: str | os.PathLike, *,
               channel: int | None = None) -> ModelFile | ForeignModel:
    """Open what stands for a model: a model file, a bundled model's name or a bioimage.io package.

    Parameters
    ----------
    model : str or PathLike
        A model file, ``'isbi2012'``, or a bioimage.io package (zip, or ``rdf.yaml``).
    channel : int, optional
        For a package of another tool whose output channels do not say which
        is P(membrane): that channel.

    Returns
    -------
    model : ModelFile or ForeignModel
        A `ModelFile` for napari-unet's own files and packages; a
        `ForeignModel` for packages of other tools. Both have ``threshold``,
        ``close_gaps`` and ``describe()``; `model_tile` gives the tile.

    Raises
    ------
    InputError
        In one line, for anything that is not a model napari-unet can run.
    """
    path = model_path(model)
    if not is_package(path):
        return load_model(path)
    package = open_package(path)
    if package.own is not None:
        return own_model_file(package)
    return open_foreign(package, channel=channel)


def model_tile(model: ModelFile | ForeignModel) -> int:
    """Return the output tile a model predicts with unless told otherwise."""
    return model.tile if isinstance(model, ForeignModel) else default_tile(model.config)


def image_job(
    model: ModelFile | ForeignModel,
    image: np.ndarray,
    *,
    threshold: float,
    min_size: int | None,
    device: torch.device | str,
    close_gaps: float | None = None,
    uncertainty: bool = True,
    **options,
) -> Generator[PredictProgress | PostProgress, None, Prediction]:
    """Predict a raw image with any opened model, then post-process it as `prediction_job`.

    A `ModelFile` runs `prediction_job` (its normalisation, overlap-tiling);
    a `ForeignModel` runs through bioimageio.core with its own pre- and
    postprocessing, block by block (`napari_unet.prediction.foreign`).

    Parameters
    ----------
    model : ModelFile or ForeignModel
        From `open_model`.
    image : (Y, X) or (Z, Y, X) ndarray
        Raw intensities, any numeric dtype.
    threshold, min_size, device, close_gaps, uncertainty
        As for `prediction_job` (a `ForeignModel` gives the margin measure).
    **options
        ``tile`` (the output tile to aim for), and for a `ModelFile` the other
        keyword arguments of `napari_unet.prediction.predict.predict`
        (batch_size, autocast_dtype, tta). A `ForeignModel` refuses ``tta``.

    Yields
    ------
    progress : PredictProgress or PostProgress

    Returns
    -------
    prediction : Prediction
    """
    device = torch.device(device)
    if isinstance(model, ModelFile):
        return (yield from prediction_job(
            model.build_model(), model.normalization.unit(image), model.normalization,
            threshold=threshold, min_size=min_size, device=device, close_gaps=close_gaps,
            uncertainty=uncertainty, **options))
    if options.get("tta"):
        raise InputError("test-time augmentation runs with napari-unet models only, not with "
                         f"{model.name!r}")
    with using_cpu_threads(device):
        prob = yield from predict_foreign(model, image, device=str(device),
                                          tile=options.get("tile"))
    return (yield from _postprocess(prob, threshold, close_gaps, min_size, uncertainty))


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
    if is_package(model_path) and open_package(model_path).own is None:
        raise InputError(f"{model_path}: a bioimage.io package of another tool predicts images "
                         "in memory only; large volumes need a napari-unet model")
    with using_cpu_threads(device):
        return (yield from predict_volume(model_path, volume, output, device=str(device),
                                          **options))


@dataclass(frozen=True)
class RankedVolume:
    """What `ranked_volume_job` returns.

    Attributes
    ----------
    path : Path
        The zarr array of P(membrane).
    ranking : Ranking
    reach : float
        The `~napari_unet.prediction.uncertainty.typical_reach` the map was computed
        with, for `~napari_unet.prediction.uncertainty.lazy_uncertainty` to show it.
    """

    path: Path
    ranking: Ranking
    reach: float


def ranked_volume_job(
    model_path: str | os.PathLike,
    volume,
    output: str | os.PathLike,
    *,
    threshold: float,
    device: torch.device,
    **options,
) -> Generator[VolumeProgress | RankProgress, None, RankedVolume]:
    """Run `volume_job`, then rank the slices by the uncertainty of the zarr probabilities.

    The map is the margin measure of `napari_unet.prediction.uncertainty.lazy_uncertainty`,
    computed whole slice by whole slice and not kept (a viewer computes it again on view).

    Parameters
    ----------
    model_path, volume, output, device, **options
        As for `volume_job`.
    threshold : float
        The mask's threshold.

    Yields
    ------
    progress : VolumeProgress or RankProgress
        Blocks predicted, then slices ranked.

    Returns
    -------
    result : RankedVolume
    """
    path = yield from volume_job(model_path, volume, output, device=device, **options)
    probabilities = da.from_zarr(str(path))
    reach = typical_reach(probabilities, threshold=threshold)
    uncertainty = lazy_uncertainty(probabilities, threshold=threshold, reach=reach)
    ranking = yield from rank_slices(uncertainty)
    return RankedVolume(path, ranking, reach)
