"""Weight map preview: eq. 2 of the paper on the current slice, live as w0 and sigma change.

The preview layer holds one slice. For a (Z, Y, X) image it is a (1, Y, X) layer translated to
the current Z, so napari draws it on that slice only: while the slider moves, the map of the
previous slice disappears instead of lying over the wrong slice, and no (Z, Y, X) array of
zeros is ever allocated. A 2D image gets a (Y, X) layer. The layer takes the image's scale.
"""

import contextlib
import hashlib
from dataclasses import dataclass, replace

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label
from qtpy.QtCore import QTimer

from napari_unet.checks import check_image
from napari_unet.errors import InputError
from napari_unet.io.labels import to_annotation
from napari_unet.training.weights import WeightConfig

from .closing import on_removal
from .layers import (
    PREVIEW,
    current_slice,
    full_resolution,
    layer_picker,
    pick_first,
    slice_translate,
)
from .session import session

DEBOUNCE_MS = 50
"""Delay after the last change of a control or of the slice before the map is recomputed."""

NAME = "weight map"


# Pure functions (numpy in, numpy out).


def slice_weights(labels: np.ndarray, config: WeightConfig) -> np.ndarray:
    """Compute the weight map of one slice of annotation labels.

    Parameters
    ----------
    labels : (Y, X) uint8 ndarray
        Annotation labels (0 = not annotated, 1 = membrane, 2 = interior).
    config : WeightConfig

    Returns
    -------
    weights : (Y, X) float32 ndarray
        `annotation_weight_map` with the settings of ``config``.
    """
    return config.of(labels)


def fingerprint(array: np.ndarray) -> bytes:
    """Return a 16-byte digest of an array's values, shape and dtype."""
    array = np.ascontiguousarray(array)
    digest = hashlib.blake2b(array.view(np.uint8).ravel(), digest_size=16)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    return digest.digest()


def weight_limits(weights: np.ndarray) -> tuple[float, float]:
    """Return contrast limits for a weight map: its smallest to its largest annotated weight.

    The lightest annotated pixels show black (the EM shows through), the heaviest bright;
    a map with one weight (or none) runs from 0 to its largest value (at least 1).
    """
    annotated = weights[weights > 0]
    if annotated.size and annotated.max() > annotated.min():
        return float(annotated.min()), float(annotated.max())
    return 0.0, max(float(weights.max()), 1.0)


def describe_weights(weights: np.ndarray, index: int | None, depth: int) -> str:
    """Summarise a slice's weight map in one line for the status label."""
    annotated = weights[weights > 0]
    where = "image" if index is None else f"slice z={index} (of {depth})"
    if not annotated.size:
        return f"{where}: nothing annotated, all weights are 0"
    return (f"{where}: weights {annotated.min():.2f} to {annotated.max():.2f}, "
            f"mean {annotated.mean():.2f} on annotated pixels")


# The edge: napari state read once into a frozen record.


def _check_layers(image_layer, labels_layer) -> tuple[int, ...]:
    """Raise InputError naming what keeps the pair from a preview; return the image shape."""
    if image_layer is None:
        raise InputError("open an EM image (File > Open, or File > Open Sample)")
    if image_layer.rgb:
        raise InputError(f"image '{image_layer.name}' is RGB; convert it to one channel first")
    shape = tuple(full_resolution(image_layer).shape)
    if len(shape) not in (2, 3):
        raise InputError(f"image has {len(shape)} axes (shape {shape}); expected (Y, X) or "
                         "(Z, Y, X)")
    if labels_layer is None:
        raise InputError("choose a labels layer (annotation or ISBI convention)")
    labels_shape = tuple(full_resolution(labels_layer).shape)
    if labels_shape != shape:
        raise InputError(f"labels shape {labels_shape} differs from image shape {shape}")
    return shape


@dataclass(frozen=True, eq=False)
class SliceState:
    """The current slice of an image and its labels, copied out of napari once.

    Attributes
    ----------
    index : int or None
        Index of the slice along Z; None for a 2D image.
    depth : int
        Number of slices (1 for a 2D image).
    image : (Y, X) ndarray
        The image slice, a copy.
    labels : (Y, X) uint8 ndarray
        The labels slice in the annotation convention (ISBI labels converted).
    scale, translate : tuple of float
        The image layer's scale and translation, one entry per image axis.
    """

    index: int | None
    depth: int
    image: np.ndarray
    labels: np.ndarray
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @classmethod
    def from_layers(cls, image_layer, labels_layer, point) -> "SliceState":
        """Read the slice at the world position ``point`` (``viewer.dims.point``).

        Raises
        ------
        InputError
            For a missing or RGB image, labels of another shape, or values that
            fit neither label convention.
        """
        shape = _check_layers(image_layer, labels_layer)
        index = current_slice(image_layer, point) if len(shape) == 3 else None
        at = () if index is None else (index,)
        image = check_image(np.array(full_resolution(image_layer)[at]))
        labels = to_annotation(np.asarray(full_resolution(labels_layer)[at]))
        return cls(index, 1 if index is None else shape[0], image, labels,
                   tuple(image_layer.scale), tuple(image_layer.translate))

    def placement(self, offset: tuple[float, float] = (0.0, 0.0)) -> dict:
        """Return ``scale`` and ``translate`` of a layer from `layer_data`.

        ``offset`` is (Y, X) in image pixels: where the layer's origin lies
        relative to the image's.
        """
        translate = slice_translate(self.translate, self.scale, self.index)
        translate[-2:] += np.multiply(self.scale[-2:], offset)
        return {"scale": self.scale, "translate": tuple(translate)}

    def layer_data(self, array: np.ndarray) -> np.ndarray:
        """Shape a (Y, X) array for a layer on this slice: (1, Y, X) in a stack."""
        return array if self.index is None else array[None]


def layer_pickers(viewer) -> tuple[ComboBox, ComboBox]:
    """Make the image and labels pickers; preview layers are left out of both."""
    image = layer_picker(viewer, "image", napari.layers.Image)
    labels = layer_picker(viewer, "labels", napari.layers.Labels, napari.layers.Image,
                          nullable=True)
    return image, labels


def default_labels(picker: ComboBox) -> None:
    """Pick the first Labels layer when nothing is picked yet."""
    pick_first(picker, lambda layer: isinstance(layer, napari.layers.Labels))


def edit_events(layer) -> list:
    """Return the event emitters of a layer that fire when its data is replaced or painted."""
    if layer is None:
        return []
    return [getattr(layer.events, name) for name in ("data", "paint")
            if hasattr(layer.events, name)]


def problem(error: Exception) -> str:
    """Phrase an error for the status label; unexpected errors name their type."""
    return f"problem: {error}" if isinstance(error, InputError) else (
        f"error: {type(error).__name__}: {error}")


def show_preview(viewer, layer, data: np.ndarray, placement: dict, *, name: str,
                 kind: str = "image", contrast_limits=None, **style):
    """Put ``data`` in the preview ``layer``, or add a new layer when there is none.

    ``style`` (colormap, blending, ...) applies to a new layer only, so what
    the user changes on the layer stays; data, placement and contrast limits
    are set every time.

    Returns
    -------
    layer : napari.layers.Layer
        The layer that shows ``data``.
    """
    if layer is None or layer not in viewer.layers or layer.ndim != data.ndim:
        if layer is not None and layer in viewer.layers:
            viewer.layers.remove(layer)
        if contrast_limits is not None:
            style["contrast_limits"] = contrast_limits
        add = viewer.add_labels if kind == "labels" else viewer.add_image
        return add(data, name=name, metadata={PREVIEW: True}, **placement, **style)
    layer.data = data
    layer.scale, layer.translate = placement["scale"], placement["translate"]
    if contrast_limits is not None:
        # The range first: napari clips the limits to it.
        layer.contrast_limits_range = contrast_limits
        layer.contrast_limits = contrast_limits
    return layer


class FollowsLabels:
    """Mixin of the previews: redraw (after a debounce timer) when the slice or labels change.

    The host sets ``_viewer``, ``_timer`` (a single-shot QTimer) and ``_watched``.
    """

    _released = False
    _following = False

    @contextlib.contextmanager
    def _following_session(self):
        """Set the controls from the session without handing them back to it (`_share`)."""
        self._following = True
        try:
            yield
        finally:
            self._following = False

    def _schedule(self, *_):
        if not self._released:
            self._timer.start()

    def _watch(self, layer):
        """Follow edits of the chosen labels layer (painting, new data)."""
        for emitter in edit_events(self._watched):
            emitter.disconnect(self._schedule)
        self._watched = layer
        for emitter in edit_events(layer):
            emitter.connect(self._schedule)

    def _release(self, *_):
        """Stop listening to napari once the widget is gone (removed, or at exit)."""
        if self._released:
            return
        self._released = True
        with contextlib.suppress(RuntimeError):  # the timer's C++ side may be gone
            self._timer.stop()
        self._viewer.dims.events.current_step.disconnect(self._schedule)
        session(self._viewer).settings_changed.disconnect(self._follow_session)
        self._watch(None)


class WeightsPreview(FollowsLabels, Container):
    """Show the weight map of the current slice as an image layer, live.

    The map is eq. 2 of Ronneberger et al. (2015) with the w0, sigma,
    balance and membrane factor set here (`WeightConfig`), computed from the labels of the slice
    the viewer shows. It follows the slice slider, the controls and edits of
    the labels, 50 ms after the last change, and is never recomputed for an
    unchanged slice, configuration and labels.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self._layer = None
        self._key = self._shown = None
        self._weights = None
        self._watched = None
        self.image_layer, self.labels_layer = layer_pickers(viewer)
        shared = session(viewer).weights
        self.w0 = FloatSlider(label="w0", min=0.0, max=50.0, step=0.5, value=shared.w0)
        self.sigma = FloatSlider(label="sigma (px)", min=0.5, max=20.0, step=0.5,
                                 value=shared.sigma)
        self.balance = CheckBox(text="balance classes", value=shared.balance)
        self.membrane_weight = FloatSlider(label="membrane x", min=0.5, max=10.0, step=0.5,
                                           value=shared.membrane_weight)
        self.membrane_weight.tooltip = "A factor on the membrane pixels' weight (1: the paper's)"
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[self.image_layer, self.labels_layer, self.w0, self.sigma,
                                  self.balance, self.membrane_weight, self.status])
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.refresh)
        self.reset_choices()
        controls = (self.w0, self.sigma, self.balance, self.membrane_weight)
        for control in (self.image_layer, self.labels_layer, *controls):
            control.changed.connect(self._schedule)
        for control in controls:
            control.changed.connect(self._share)
        self.labels_layer.changed.connect(self._watch)
        session(viewer).settings_changed.connect(self._follow_session)
        viewer.dims.events.current_step.connect(self._schedule)
        on_removal(self.native, self._release)
        self._watch(self.labels_layer.value)
        self._schedule()

    @property
    def layer(self):
        """The preview layer, or None before the first map."""
        return self._layer

    @property
    def config(self) -> WeightConfig:
        """The weight map settings of the controls (raises InputError when invalid)."""
        return replace(session(self._viewer).weights, w0=float(self.w0.value),
                       sigma=float(self.sigma.value), balance=bool(self.balance.value),
                       membrane_weight=float(self.membrane_weight.value))

    def reset_choices(self, *_):
        """Refresh the layer lists (napari calls this when layers change)."""
        super().reset_choices()
        if hasattr(self, "labels_layer"):
            default_labels(self.labels_layer)

    def _share(self, *_):
        """Hand the settings to training (see `session`), when they are valid."""
        if self._following:
            return
        try:
            session(self._viewer).set_settings(weights=self.config)
        except InputError:
            pass

    def _follow_session(self) -> None:
        """Show settings chosen elsewhere (a Training preset)."""
        shared = session(self._viewer).weights
        with self._following_session():
            self.w0.value, self.sigma.value = shared.w0, shared.sigma
            self.balance.value = shared.balance
            self.membrane_weight.value = shared.membrane_weight

    def refresh(self):
        """Show the weight map of the current slice; no work when nothing changed."""
        try:
            state = SliceState.from_layers(self.image_layer.value, self.labels_layer.value,
                                           self._viewer.dims.point)
            config = self.config
        except Exception as err:  # a message, never a traceback into napari
            self.status.value = problem(err)
            return
        key = (state.index, config, fingerprint(state.labels))
        if key != self._key:
            self._weights, self._key = slice_weights(state.labels, config), key
        placement = state.placement()
        shown = (key, placement["scale"], placement["translate"])
        if shown != self._shown or self._layer is None or self._layer not in self._viewer.layers:
            limits = weight_limits(self._weights)
            self._layer = show_preview(
                self._viewer, self._layer, state.layer_data(self._weights), placement,
                name=NAME, colormap="magma", blending="additive",
                contrast_limits=limits,
            )
            self._shown = shown
        self.status.value = describe_weights(self._weights, state.index, state.depth)
