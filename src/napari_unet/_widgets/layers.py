"""Layer helpers of the widgets: pickers, full-resolution data, the slice in view, previews."""

from collections.abc import Callable

import numpy as np
from magicgui.widgets import ComboBox

from napari_unet._writer import PREDICTED

PREVIEW = "napari_unet_preview"
"""Metadata key of preview layers (weight map, augmented samples, validation prediction):
shown to the user, never offered as input."""


def is_preview(layer) -> bool:
    """Whether a layer is one of the plugin's previews (never an input)."""
    return bool(layer.metadata.get(PREVIEW))


def is_predicted(layer) -> bool:
    """Whether the Prediction widget wrote the layer (`PREDICTED` in its metadata)."""
    return PREDICTED in layer.metadata


def full_resolution(layer):
    """Return a layer's full-resolution data (level 0 of a multiscale layer), not a copy."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def is_lazy(layer) -> bool:
    """Whether a layer's data are read on demand (dask, zarr) rather than held in memory."""
    return not isinstance(full_resolution(layer), np.ndarray)


def current_slice(layer, point) -> int:
    """Return the slice of a (Z, Y, X) layer at the world position ``point``.

    Parameters
    ----------
    layer : napari.layers.Layer
        A stack: its first data axis is Z.
    point : sequence of float
        A world position, such as ``viewer.dims.point``.

    Returns
    -------
    z : int
        The nearest slice, clipped to the stack.
    """
    z = round(float(layer.world_to_data(point)[0]))
    return int(np.clip(z, 0, full_resolution(layer).shape[0] - 1))


def camera(viewer):
    """Return a viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def slice_translate(translate, scale, index: int | None) -> np.ndarray:
    """Return the translate that puts a one-slice layer on slice ``index`` of a stack.

    Parameters
    ----------
    translate, scale : sequence of float
        The stack layer's, one entry per axis.
    index : int or None
        The slice; None for a 2D layer, whose ``translate`` is returned as it is.

    Returns
    -------
    translate : (D,) float ndarray
        A new array, for a (1, Y, X) layer with the stack's ``scale``.
    """
    translate = np.array(translate, dtype=float)
    if index is not None:
        translate[0] += index * scale[0]
    return translate


def layer_picker(viewer, label: str, *kinds: type, predicted: bool | None = None,
                 **options) -> ComboBox:
    """Make a ComboBox that lists the viewer's layers of ``kinds``, never a preview.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    label : str
    *kinds : type
        Layer classes offered, such as ``napari.layers.Image``.
    predicted : bool or None
        True: only layers the Prediction widget wrote; False: never those; None: either.
    **options
        More ComboBox arguments (``nullable``, ``tooltip``).
    """

    def choices(_widget):
        return [layer for layer in viewer.layers
                if isinstance(layer, kinds) and not is_preview(layer)
                and (predicted is None or is_predicted(layer) == predicted)]

    return ComboBox(label=label, choices=choices, **options)


def pick_first(picker: ComboBox, wanted: Callable[[object], bool]) -> None:
    """Choose the first layer offered that is ``wanted``, when a (nullable) picker has none."""
    if picker.value is None:
        found = [layer for layer in picker.choices if layer is not None and wanted(layer)]
        if found:
            picker.value = found[0]
