"""Prediction with a bioimage.io package from another tool, through bioimageio.core.

The package runs with its own pre- and postprocessing (bioimageio.core's
prediction pipeline) on each slice, cut into blocks of the sizes it declares,
each grown by its output halo and mirrored (or padded as the package says) at
the slice border, as bioimageio.core tiles. Only 2D models with one
single-channel input qualify; the output channel that is P(membrane) is the
only one, one named for membranes or boundaries, or the one asked for.

TorchScript weights are preferred: running ``pytorch_state_dict`` weights
imports the package's own architecture code, as every bioimage.io consumer
does. Nothing is fetched from the network: the description is read without
bioimageio.spec's online checks, and a package whose weights lie at a URL is
refused.
"""

import os
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.model.package import Package, first_error, open_package, require_bioimageio
from napari_unet.prediction.predict import PredictProgress
from napari_unet.prediction.tiles import mirror_crop

WEIGHT_FORMATS = ("torchscript", "pytorch_state_dict")
"""The weight formats run, in order of preference."""
MEMBRANE_WORDS = ("membrane", "boundar", "contour", "edge")
DEFAULT_TILE = 256


@dataclass(frozen=True)
class AxisSize:
    """The sides a package accepts on one axis: ``first + k * step`` (``step`` 0: fixed)."""

    first: int
    step: int

    def block(self, wanted: int, side: int) -> int:
        """Return the block side for about ``wanted`` pixels, within ``side`` (or ``first``)."""
        if not self.step:
            return self.first
        k = max(0, -(-(wanted - self.first) // self.step))
        fitting = max(0, (side - self.first) // self.step)  # blocks may not exceed the slice
        return self.first + min(k, fitting) * self.step


@dataclass(frozen=True)
class ForeignModel:
    """A bioimage.io package of another tool, checked to be a 2D single-channel model.

    Attributes
    ----------
    path : Path
    name : str
    weights_format : {'torchscript', 'pytorch_state_dict'}
    channel : int
        The output channel that is P(membrane).
    channel_name : str
    sizes : (AxisSize, AxisSize)
        The sides of y and x the input takes.
    halo : int
        The output halo per side (the larger of y's and x's).
    description : bioimageio.spec.model.v0_5.ModelDescr
        The package's description (read without online checks).
    """

    path: Path
    name: str
    weights_format: str
    channel: int
    channel_name: str
    sizes: tuple[AxisSize, AxisSize]
    halo: int
    description: Any = field(repr=False, compare=False)

    threshold = 0.5
    """The mask's threshold unless told otherwise."""
    close_gaps = None
    """No gap closing unless told otherwise."""

    @property
    def tile(self) -> int:
        """The output tile predicted unless told otherwise."""
        return DEFAULT_TILE

    def describe(self) -> str:
        """Summarise the package in one line."""
        y = self.sizes[0]
        side = f"{y.first}" if not y.step else f"{y.first} + {y.step} k"
        return (f"bioimage.io model {self.name!r} ({self.weights_format}); sides {side}, halo "
                f"{self.halo}; P(membrane) = output channel {self.channel} "
                f"({self.channel_name}); threshold {self.threshold:.2f}")


def _remote_sources(value) -> list[str]:
    """Return the URLs among the strings of a description's block."""
    if isinstance(value, dict):
        return [url for v in value.values() for url in _remote_sources(v)]
    if isinstance(value, list):
        return [url for v in value for url in _remote_sources(v)]
    return [value] if isinstance(value, str) and "://" in value else []


def open_foreign(package: Package | str | os.PathLike, *,
                 channel: int | None = None) -> ForeignModel:
    """Read a package of another tool and check that napari-unet can run it.

    Parameters
    ----------
    package : Package, str or PathLike
        An opened package, or its zip file or ``rdf.yaml``.
    channel : int, optional
        The output channel that is P(membrane), when the package's channel
        names do not say.

    Returns
    -------
    model : ForeignModel

    Raises
    ------
    InputError
        In one line: bioimageio.core missing, an invalid description, files at
        URLs, no runnable weights, not 2D, not one single-channel input, an
        output of another size, or an output channel that cannot be chosen.
    """
    if not isinstance(package, Package):
        package = open_package(package)
    path = package.path
    require_bioimageio("running a bioimage.io package of another tool")
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    urls = _remote_sources(package.rdf.get("weights"))
    if urls:
        raise InputError(f"{path}: its weights are at a URL ({urls[0]}), not in the package; "
                         "download the whole package (zip) first")
    descr = load_description(path, format_version="latest", perform_io_checks=False)
    if isinstance(descr, InvalidDescr):
        problem = first_error(descr.validation_summary)
        raise InputError(f"{path}: not a valid bioimage.io model ({problem})")
    if not isinstance(descr, v0_5.ModelDescr):
        raise InputError(f"{path}: a bioimage.io {descr.type}, not a model")
    formats = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]
    if not formats:
        present = [name for name, entry in descr.weights if entry is not None]
        raise InputError(f"{path}: weights in {', '.join(present)} only; napari-unet runs "
                         "torchscript or pytorch_state_dict weights")
    sizes = _input_sizes(path, descr)
    output = descr.outputs[0]
    halo = _output_halo(path, descr, output)
    index, name = _membrane_channel(path, output, channel)
    return ForeignModel(path=path, name=str(descr.name), weights_format=formats[0],
                        channel=index, channel_name=name, sizes=sizes, halo=halo,
                        description=descr)


def _shape_text(tensor) -> str:
    return "(" + ", ".join(str(a.id) for a in tensor.axes) + ")"


def _input_sizes(path: Path, descr) -> tuple[AxisSize, AxisSize]:
    """Check the one input is a 2D single-channel image; return the sides of y and x."""
    from bioimageio.spec.model import v0_5

    required = [t for t in descr.inputs if not t.optional]
    if len(descr.inputs) != 1 or len(required) != 1:
        raise InputError(f"{path}: napari-unet runs models with one input image; this one "
                         f"takes {len(descr.inputs)}")
    tensor = descr.inputs[0]
    sizes = {}
    for axis in tensor.axes:
        if axis.type == "batch":
            continue
        if axis.type == "channel":
            if axis.size != 1:
                raise InputError(f"{path}: napari-unet runs single-channel models; this one "
                                 f"takes {axis.size} channels {_shape_text(tensor)}")
            continue
        if axis.type != "space" or str(axis.id) not in ("y", "x"):
            raise InputError(f"{path}: napari-unet runs 2D models (y, x); this one takes "
                             f"{_shape_text(tensor)}")
        if isinstance(axis.size, v0_5.ParameterizedSize):
            sizes[str(axis.id)] = AxisSize(axis.size.min, axis.size.step)
        elif isinstance(axis.size, int):
            sizes[str(axis.id)] = AxisSize(axis.size, 0)
        else:
            raise InputError(f"{path}: its input's {axis.id} size refers to another axis; "
                             "napari-unet runs models whose y and x sides are their own")
    if set(sizes) != {"y", "x"}:
        raise InputError(f"{path}: napari-unet runs 2D models (y, x); this one takes "
                         f"{_shape_text(tensor)}")
    return sizes["y"], sizes["x"]


def _output_halo(path: Path, descr, output) -> int:
    """Check the output has the input's y and x sides; return its halo."""
    from bioimageio.spec.model import v0_5

    source = descr.inputs[0]
    halo = 0
    axes = {str(a.id): a for a in output.axes}
    for name in ("y", "x"):
        axis = axes.get(name)
        size = getattr(axis, "size", None)
        same = (isinstance(size, v0_5.SizeReference) and size.tensor_id == source.id
                and str(size.axis_id) == name and size.offset == 0
                and axis.scale == next(a.scale for a in source.axes if str(a.id) == name))
        if not same:
            raise InputError(f"{path}: its output {_shape_text(output)} is not the size of its "
                             "input in y and x; napari-unet reads membrane maps of the input's "
                             "size")
        halo = max(halo, getattr(axis, "halo", 0))
    return halo


def _membrane_channel(path: Path, output, channel: int | None) -> tuple[int, str]:
    """Return the output channel that is P(membrane), and its name."""
    axis = next((a for a in output.axes if a.type == "channel"), None)
    names = [str(n) for n in axis.channel_names] if axis is not None else [str(output.id)]
    if channel is not None:
        if not 0 <= channel < len(names):
            raise InputError(f"channel {channel}: the output has channels 0..{len(names) - 1} "
                             f"({', '.join(names)})")
        return channel, names[channel]
    if len(names) == 1:
        return 0, names[0]
    named = [i for i, n in enumerate(names) if any(w in n.lower() for w in MEMBRANE_WORDS)]
    if len(named) == 1:
        return named[0], names[named[0]]
    raise InputError(f"{path}: the output has channels {', '.join(names)}; say which one is "
                     "P(membrane) (--channel N)")


def predict_foreign(
    model: ForeignModel,
    image: np.ndarray,
    *,
    device: str = "cpu",
    tile: int | None = None,
) -> Generator[PredictProgress, None, np.ndarray]:
    """Predict P(membrane) with a foreign package, block by block, yielding progress.

    Parameters
    ----------
    model : ForeignModel
    image : (Y, X) or (Z, Y, X) ndarray
        Raw intensities (the package's preprocessing normalises them).
    device : str
        Where the network runs (``'cpu'``, ``'cuda'``, ...).
    tile : int, optional
        The block's inner side to aim for (the package's sides decide);
        `DEFAULT_TILE` by default.

    Yields
    ------
    progress : PredictProgress
        After every block of every slice.

    Returns
    -------
    probabilities : float32 ndarray
        The shape of ``image``, in [0, 1].
    """
    require_bioimageio("running a bioimage.io package of another tool")
    from bioimageio.core import Sample, create_prediction_pipeline
    from bioimageio.core.digest_spec import get_input_halo

    stack = np.asarray(image)[None] if np.ndim(image) == 2 else np.asarray(image)
    wanted = (tile or DEFAULT_TILE) + 2 * model.halo
    height, width = stack.shape[1:]
    padded = (max(height, model.sizes[0].first), max(width, model.sizes[1].first))
    block = {"y": model.sizes[0].block(wanted, padded[0]),
             "x": model.sizes[1].block(wanted, padded[1])}
    descr = model.description
    source, output = descr.inputs[0], descr.outputs[0]
    result = np.empty(stack.shape, dtype=np.float32)
    with create_prediction_pipeline(descr, devices=[str(device)],
                                    weights_format=model.weights_format) as pipeline:
        halo = get_input_halo(descr)
        for z, slice_ in enumerate(stack):
            sample = Sample(members={source.id: _input_tensor(source, slice_, padded)},
                            stat={}, id=z)
            pipeline.apply_preprocessing(sample)
            count, blocks = sample.split_into_blocks(
                {source.id: {**{a.id: 1 for a in source.axes if a.type in ("batch",
                                                                          "channel")},
                             **{a.id: block[str(a.id)] for a in source.axes
                                if a.type == "space"}}},
                halo=halo, pad_mode=pipeline.pad_mode)
            predicted = None
            for done, piece in enumerate(blocks, start=1):
                out = pipeline.predict_sample_block(piece, skip_preprocessing=True,
                                                    skip_postprocessing=True)
                if predicted is None:
                    predicted = Sample.from_blocks([out])
                else:
                    predicted.set_block(out)
                yield PredictProgress(z * count + done, len(stack) * count)
            pipeline.apply_postprocessing(predicted)
            result[z] = _membrane(predicted.members[output.id], model.channel)[:height, :width]
    return result[0] if np.ndim(image) == 2 else result


def _input_tensor(descr, slice_: np.ndarray, padded: tuple[int, int]):
    """Return the slice as the input tensor (its axes in order), mirrored up to ``padded``."""
    from bioimageio.core import Tensor

    if padded != slice_.shape:
        slice_ = mirror_crop(slice_, 0, 0, *padded)
    shape, dims = [], []
    for axis in descr.axes:
        dims.append(axis.id)
        shape.append(slice_.shape[0] if str(axis.id) == "y" else
                     slice_.shape[1] if str(axis.id) == "x" else 1)
    order = [d for d in dims if str(d) in ("y", "x")]
    data = slice_ if [str(d) for d in order] == ["y", "x"] else slice_.T
    return Tensor.from_numpy(np.ascontiguousarray(data).reshape(shape), dims=tuple(dims))


def _membrane(tensor, channel: int) -> np.ndarray:
    """P(membrane) of an output tensor as a (Y, X) float32 array in [0, 1]."""
    data = tensor.data
    picks = {d: 0 for d in data.dims if str(d) not in ("y", "x")}
    if "channel" in [str(d) for d in data.dims]:
        picks[next(d for d in data.dims if str(d) == "channel")] = channel
    plane = data.isel(picks).transpose(*[d for n in ("y", "x") for d in data.dims
                                         if str(d) == n])
    return np.clip(np.nan_to_num(plane.to_numpy().astype(np.float32)), 0.0, 1.0)
