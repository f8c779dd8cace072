"""Augmentation preview: a few augmented samples of the current slice, as training sees them.

Image, labels and weight map are augmented jointly (`training.augment.augment`) from the
image mapped to [0, 1] (`Normalization.unit`, measured on the slice), its annotation labels
and their weight map. The samples are laid out as mosaics beside the data, on the current
slice: one row of augmented images with their labels over them to the right of the image, and
the augmented weight maps below. Stacking the samples as (N, Y, X) layers instead would put
sample i on slice i of a (Z, Y, X) volume.

The samples are computed in a napari thread worker that gets numpy arrays and frozen configs
only; a newer request quits the running worker, and a request counter drops any result that
still arrives from it.
"""

from dataclasses import dataclass, replace
from functools import partial

import napari
import numpy as np
from magicgui.widgets import Container, FloatSlider, Label, PushButton, SpinBox
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer

from napari_unet.errors import InputError
from napari_unet.io.labels import LABEL_COLORS
from napari_unet.model.normalization import Normalization
from napari_unet.training.augment import augment
from napari_unet.training.augment_config import AugmentConfig
from napari_unet.training.weights import WeightConfig

from .closing import on_removal
from .session import session
from .weights_preview import (
    FollowsLabels,
    SliceState,
    default_labels,
    fingerprint,
    layer_pickers,
    problem,
    show_preview,
    slice_weights,
    weight_limits,
)

DEBOUNCE_MS = 100
"""Delay after the last change before new samples are drawn."""

COLUMNS = 4
"""Samples per row of a mosaic."""

NAMES = {"image": "augmented image", "labels": "augmented labels", "weights": "augmented weights"}


# Pure functions (numpy in, numpy out).


@dataclass(frozen=True, eq=False)
class Samples:
    """Augmented samples of one slice.

    Attributes
    ----------
    image : (N, Y, X) float32 ndarray
        Images in [0, 1].
    labels : (N, Y, X) uint8 ndarray
        Annotation labels.
    weights : (N, Y, X) float32 ndarray
        Weight maps.
    """

    image: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


def augment_samples(image: np.ndarray, labels: np.ndarray, *, weight_config: WeightConfig,
                    augment_config: AugmentConfig, seed: int, count: int):
    """Draw augmented samples of one slice; a generator that yields after each sample.

    Parameters
    ----------
    image : (Y, X) ndarray
        Any real dtype; mapped to [0, 1] as for training (`Normalization.unit`).
    labels : (Y, X) uint8 ndarray
        Annotation labels.
    weight_config : WeightConfig
        Settings of the weight map that is augmented with the labels.
    augment_config : AugmentConfig
    seed : int
        The same seed gives the same samples.
    count : int
        Number of samples.

    Yields
    ------
    done : int
        Samples finished so far.

    Returns
    -------
    samples : Samples
        With ``augment_config.strength == 0`` every sample is the unit image,
        the labels and their weight map unchanged.
    """
    unit = Normalization.of(image).unit(image)
    weights = slice_weights(labels, weight_config)
    rng = np.random.default_rng(seed)
    drawn = []
    for done in range(1, count + 1):
        drawn.append(augment(unit, labels, weights, config=augment_config, rng=rng))
        yield done
    return Samples(*(np.stack(arrays) for arrays in zip(*drawn, strict=True)))


def mosaic(stack: np.ndarray, *, columns: int, gap: int) -> np.ndarray:
    """Arrange a stack of slices in a grid, row by row, with ``gap`` zero pixels between.

    Parameters
    ----------
    stack : (N, Y, X) ndarray
    columns : int
        Slices per row.
    gap : int
        Pixels between neighbours.

    Returns
    -------
    grid : (R * (Y + gap) - gap, C * (X + gap) - gap) ndarray
        R rows of C = min(N, columns) slices; same dtype as ``stack``.
    """
    count, height, width = stack.shape
    columns = min(count, columns)
    rows = -(-count // columns)
    grid = np.zeros((rows * (height + gap) - gap, columns * (width + gap) - gap), stack.dtype)
    for i, tile in enumerate(stack):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[top:top + height, left:left + width] = tile
    return grid


def mosaic_gap(shape: tuple[int, int]) -> int:
    """Return the gap between mosaic tiles: about 3% of the slice side, at least 4 pixels."""
    return max(4, max(shape) // 32)


# The widget.


class AugmentPreview(FollowsLabels, Container):
    """Show augmented samples of the current slice beside the data, with a Re-roll button.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    weight_config : WeightConfig or None
        Weight map that is augmented with the labels (default: the Weight map
        preview's settings, see `session`).

    The settings here are the ones Training uses.
    """

    def __init__(self, viewer: napari.viewer.Viewer, *, weight_config: WeightConfig | None = None):
        self._viewer = viewer
        self._weight_config = weight_config
        self.base_config = session(viewer).augment
        self.samples: Samples | None = None
        self.seed = 0
        self._seeds = np.random.default_rng()
        self._layers = dict.fromkeys(NAMES)
        self._worker = None
        self._request, self._requested, self._closed = 0, None, False
        self._watched = None
        self.image_layer, self.labels_layer = layer_pickers(viewer)
        self.count = SpinBox(label="samples", min=1, max=16, value=4)
        self.strength = FloatSlider(label="strength", min=0.0, max=2.0, step=0.05,
                                    value=self.base_config.strength)
        self.elastic_std = FloatSlider(label="elastic std (px)", min=0.0, max=30.0, step=0.5,
                                       value=self.base_config.elastic_std)
        self.rotate = FloatSlider(label="rotation limit (deg)", min=0.0, max=180.0, step=1.0,
                                  value=self.base_config.rotate)
        self.reroll = PushButton(text="Re-roll")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[self.image_layer, self.labels_layer, self.count, self.strength,
                                  self.elastic_std, self.rotate, self.reroll, self.status])
        self._timer = QTimer(self.native)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.refresh)
        self.reset_choices()
        for control in (self.image_layer, self.labels_layer, self.count, self.strength,
                        self.elastic_std, self.rotate):
            control.changed.connect(self._schedule)
        for control in (self.strength, self.elastic_std, self.rotate):
            control.changed.connect(self._share)
        session(viewer).settings_changed.connect(self._follow_session)
        self.reroll.changed.connect(self.new_seed)
        self.labels_layer.changed.connect(self._watch)
        viewer.dims.events.current_step.connect(self._schedule)
        on_removal(self.native, self._release)
        self._watch(self.labels_layer.value)
        self._schedule()

    @property
    def augment_config(self) -> AugmentConfig:
        """`base_config` with the controls' settings (raises InputError when invalid)."""
        return replace(self.base_config, strength=float(self.strength.value),
                       elastic_std=float(self.elastic_std.value),
                       rotate=float(self.rotate.value))

    @property
    def weight_config(self) -> WeightConfig:
        """The weight map settings augmented with the labels."""
        return self._weight_config or session(self._viewer).weights

    def _share(self, *_):
        """Hand the settings to training (see `session`), when they are valid."""
        if self._following:
            return
        try:
            session(self._viewer).set_settings(augment=self.augment_config)
        except InputError:
            pass

    def _follow_session(self) -> None:
        """Take settings chosen elsewhere (a Training preset, the weight map) and redraw."""
        shared = session(self._viewer).augment
        if shared != self.base_config:
            self.base_config = shared
            with self._following_session():
                self.strength.value, self.rotate.value = shared.strength, shared.rotate
                self.elastic_std.value = shared.elastic_std
        self._schedule()

    @property
    def layers(self) -> dict:
        """The preview layers by role ('image', 'labels', 'weights'); None before the first."""
        return dict(self._layers)

    @property
    def busy(self) -> bool:
        """Whether a worker is drawing samples."""
        return self._worker is not None and self._worker.is_running

    def reset_choices(self, *_):
        """Refresh the layer lists (napari calls this when layers change)."""
        super().reset_choices()
        if hasattr(self, "labels_layer"):
            default_labels(self.labels_layer)

    def new_seed(self, *_):
        """Draw new samples with a new seed."""
        self.seed = int(self._seeds.integers(2**31))
        self.refresh()

    def _schedule(self, *_):
        if not self._closed:
            self._timer.start()

    def _release(self, *_):
        """Stop the worker and stop listening to napari once the widget is gone."""
        self._closed = True
        super()._release()
        if self._worker is not None:
            self._worker.quit()

    def refresh(self):
        """Start drawing samples of the current slice, unless that request is already made."""
        try:
            state = SliceState.from_layers(self.image_layer.value, self.labels_layer.value,
                                           self._viewer.dims.point)
            config = self.augment_config
        except Exception as err:  # a message, never a traceback into napari
            self.status.value = problem(err)
            return
        key = (state.index, fingerprint(state.image), fingerprint(state.labels), config,
               self.weight_config, self.seed, int(self.count.value))
        shown = all(ly is not None and ly in self._viewer.layers for ly in self._layers.values())
        if key == self._requested and (self.busy or shown):
            return
        self._requested = key
        self._start(state, config)

    def _start(self, state: SliceState, config: AugmentConfig):
        """Quit any running worker and start one for ``state``."""
        if self._worker is not None:
            self._worker.quit()
        self._request += 1
        worker = create_worker(
            augment_samples, state.image, state.labels, weight_config=self.weight_config,
            augment_config=config, seed=self.seed, count=int(self.count.value),
            _start_thread=False, _ignore_errors=True,
        )
        worker.yielded.connect(partial(self._progress, self._request))
        worker.returned.connect(partial(self._apply, self._request, state))
        worker.errored.connect(partial(self._failed, self._request))
        self._worker = worker
        worker.start()

    def _current(self, request: int) -> bool:
        return request == self._request and not self._closed

    def _progress(self, request: int, done: int):
        if self._current(request):
            self.status.value = f"augmenting: sample {done} of {int(self.count.value)}"

    def _failed(self, request: int, error: Exception):
        if self._current(request):
            self._requested = None
            self.status.value = problem(error)

    def _apply(self, request: int, state: SliceState, samples: Samples):
        """Show the samples of a current request (on the main thread)."""
        if not self._current(request):
            return
        self.samples = samples
        self._show(state, samples)
        where = "the image" if state.index is None else f"slice z={state.index}"
        self.status.value = (f"{len(samples.image)} samples of {where}, seed {self.seed}; "
                             "right of the image, weights below")

    def _show(self, state: SliceState, samples: Samples):
        """Put the sample mosaics in the preview layers."""
        height, width = state.image.shape
        gap = mosaic_gap((height, width))
        grids = {role: mosaic(getattr(samples, role), columns=COLUMNS, gap=gap)
                 for role in NAMES}
        left = width + gap
        below = grids["image"].shape[0] + gap
        at = {"image": (0, left), "labels": (0, left), "weights": (below, left)}
        styles = {
            "image": {"colormap": "gray", "contrast_limits": (0.0, 1.0)},
            "labels": {"kind": "labels", "colormap": LABEL_COLORS, "opacity": 0.7},
            "weights": {"colormap": "magma", "contrast_limits": weight_limits(grids["weights"])},
        }
        for role in NAMES:
            self._layers[role] = show_preview(
                self._viewer, self._layers[role], state.layer_data(grids[role]),
                state.placement(at[role]), name=NAMES[role], **styles[role],
            )
