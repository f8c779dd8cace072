"""Prediction widget: run a saved model on the current slice or the whole stack.

The model is a model file (.pt) or a bioimage.io package (.zip, or its rdf.yaml):
napari-unet's own packages run exactly as their model file; another tool's 2D
single-channel package runs through bioimageio.core
(`napari_unet.prediction.pipeline.open_model` and `image_job`).

The results go into layers that later runs update in place, so a mask corrected by
hand and the probabilities stay one stack layer each: probabilities, mask, cells (when
asked for) and the uncertainty map (hidden; `napari_unet.prediction.uncertainty`). Slices
of the mask marked as corrected (see `session`) are never overwritten. The slices'
ranking by uncertainty goes into the mask layer's metadata, where Correct and retrain
reads its "correct next" list.

A lazy layer (dask or zarr data, possibly larger than memory) is predicted block
by block into a zarr folder (`napari_unet.prediction.volume.predict_volume`), and its
probabilities, mask and uncertainty come back as lazy layers: nothing is loaded whole.
"""

from functools import partial
from pathlib import Path

import dask.array as da
import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet._writer import CELLS, PREDICTED, UNCERTAINTY
from napari_unet.devices import autocast_dtype, available_devices, pick_device
from napari_unet.errors import InputError
from napari_unet.io.labels import INTERIOR, LABEL_COLORS, MEMBRANE
from napari_unet.model.files import BUNDLED, ModelFile, is_bundled
from napari_unet.prediction.foreign import ForeignModel
from napari_unet.prediction.pipeline import (
    Prediction,
    RankedVolume,
    image_job,
    model_tile,
    open_model,
    prediction_job,
    ranked_volume_job,
)
from napari_unet.prediction.postprocess import lazy_membrane
from napari_unet.prediction.predict import PredictProgress
from napari_unet.prediction.uncertainty import Ranking, lazy_uncertainty

from .layers import current_slice, full_resolution, is_lazy, layer_picker
from .runner import Job, JobWidget
from .session import corrected_slices, session, slice_ranking

PROBABILITY, MASK = "membrane probability", "membrane mask"
LAZY_MASK = "lazy mask"
"""Role of a mask computed on demand from zarr probabilities (shown, not corrected)."""
UNCERTAINTY_STYLE = {"colormap": "yellow", "contrast_limits": (0.0, 0.6), "blending": "additive"}
"""How the uncertainty layer looks (hidden at first): bright where the model is least sure."""
DEFAULT_VOLUME_OUTPUT = Path.home() / "napari-unet" / "probabilities.zarr"
MARK = PREDICTED
"""Layer metadata key of the layers this widget writes (not offered as input images); its
value is the layer's role (``'cells'`` tells the writer to save cell labels as they are)."""


class PredictionWidget(JobWidget):
    """Predict membranes with a model file or package; show probability, mask and cells layers.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    first_look = True
    """Predict the slice in view with the bundled model when the widget opens without a model."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(viewer, parent)
        self._model_file: ModelFile | ForeignModel | None = None
        self._loaded: Path | None = None
        self._target: tuple[int | None, np.ndarray] | None = None  # slice, source layer
        self.form = self._make_form(viewer)
        self.summary = QLabel("")
        self.slice_button = QPushButton("Predict current slice")
        self.stack_button = QPushButton("Predict stack")
        self.slice_button.clicked.connect(self.predict_slice)
        self.stack_button.clicked.connect(self.predict_stack)
        buttons = QHBoxLayout()
        for button in (self.slice_button, self.stack_button, self.stop_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        for item in (self.form.native, self.summary, buttons, self.progress, self.status):
            (layout.addLayout if isinstance(item, QHBoxLayout) else layout.addWidget)(item)
        layout.addStretch()
        self.model.changed.connect(self._on_model_chosen)
        current = session(viewer)
        current.model_changed.connect(self._follow_model)
        self.disable_while_running(self.slice_button, self.stack_button)
        if current.model is not None:
            self._follow_model(current.model)
        elif BUNDLED["isbi2012"].is_file():
            # A first look before any training: the bundled model on the slice in view.
            self.model.value = BUNDLED["isbi2012"]
            QTimer.singleShot(0, self._first_look)

    def _make_form(self, viewer) -> Container:
        self.image_layer = layer_picker(viewer, "image", napari.layers.Image, predicted=False)
        self.model = FileEdit(label="model", mode="r", filter="*.pt *.zip *.yaml", nullable=True,
                              tooltip="a model file (.pt) or a bioimage.io package "
                                      "(.zip, or its rdf.yaml)")
        self.tile = SpinBox(label="tile", value=388, min=8, max=4096)
        self.batch_size = SpinBox(label="batch", value=4, min=1, max=256)
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.threshold = FloatSpinBox(label="threshold", value=0.5, min=0.0, max=1.0, step=0.01)
        self.close_gaps = FloatSpinBox(
            label="close gaps", value=0.0, min=0.0, max=0.95, step=0.05,
            tooltip="0: off. Else also mark as membrane the watershed lines between the cells "
                    "seeded where P(membrane) is at most this, closing faint gaps in the mask")
        self.tta = CheckBox(text="test-time augmentation (8x slower)")
        self.cells = CheckBox(text="label cells")
        self.min_size = SpinBox(label="min cell size", value=30, min=0, max=1_000_000)
        self.volume_output = FileEdit(
            label="large output", mode="w", filter="*.zarr", value=DEFAULT_VOLUME_OUTPUT,
            tooltip="a lazy layer (dask or zarr, maybe larger than memory) is predicted block "
                    "by block into this zarr folder")
        return Container(widgets=[self.image_layer, self.model, self.tile, self.batch_size,
                                  self.device, self.threshold, self.close_gaps, self.tta,
                                  self.cells,
                                  self.min_size, self.volume_output])

    def reset_choices(self, *_) -> None:
        """Refresh the image list (napari calls this when layers change)."""
        self.form.reset_choices()

    def predict_slice(self) -> None:
        """Predict the slice shown in the viewer (the whole image when it is 2D)."""
        self._start(whole_stack=False)

    def predict_stack(self) -> None:
        """Predict every slice of the image."""
        self._start(whole_stack=True)

    def _first_look(self) -> None:
        """Predict the slice in view with the bundled model, unless the user got there first."""
        untouched = self._target is None and not self.running
        layer = self.image_layer.value
        if self.first_look and untouched and self._loaded is not None \
                and is_bundled(self._loaded) and layer is not None and not layer.rgb:
            self.predict_slice()

    def _follow_model(self, path: Path) -> None:
        """Take the session's current model (just trained, retrained or loaded)."""
        self.model.value = path

    def _on_model_chosen(self, *_) -> None:
        try:
            self._ensure_model()
        except InputError as err:
            self.report_error(err)
            return
        if isinstance(self._model_file, ModelFile):  # other widgets read napari-unet models only
            session(self._viewer).set_model(self._loaded)

    def _ensure_model(self) -> ModelFile | ForeignModel:
        path = self.model.value
        if path is None or str(path) in ("", "."):
            raise InputError("choose a model file (.pt) or a bioimage.io package (.zip)")
        if self._model_file is None or Path(path) != self._loaded:
            self._model_file, self._loaded = None, None
            self.summary.setText("")
            model_file = open_model(path)
            self.tile.value = model_tile(model_file)
            self.threshold.value = model_file.threshold
            self.close_gaps.value = model_file.close_gaps or 0.0
            self.summary.setText(model_file.describe())
            self._model_file, self._loaded = model_file, Path(path)
            self.status.setText("")
        return self._model_file

    def _start(self, *, whole_stack: bool) -> None:
        self.launch(partial(self._prediction_job, whole_stack))

    def _prediction_job(self, whole_stack: bool) -> Job:
        """Copy the image (or the slice in view) and the settings, on the main thread.

        Stop ends the prediction after its current batch of tiles; nothing is written.
        """
        model_file = self._ensure_model()
        device = pick_device(self.device.value)
        layer = self.image_layer.value
        if whole_stack and layer is not None and is_lazy(layer):
            return self._volume_job(layer, device)
        z, image = self._read_image(layer, whole_stack)
        self._target = (z, layer)
        settings = {"threshold": self.threshold.value, "close_gaps": self.close_gaps.value or None,
                    "min_size": self.min_size.value if self.cells.value else None,
                    "device": device}
        if isinstance(model_file, ForeignModel):
            if self.tta.value:
                raise InputError("test-time augmentation runs with napari-unet models only, "
                                 f"not with {model_file.name!r}")
            run = partial(image_job, model_file, image, tile=self.tile.value, **settings)
        else:
            run = partial(prediction_job, model_file.build_model(),
                          model_file.normalization.unit(image), model_file.normalization,
                          tile=self.tile.value, batch_size=self.batch_size.value,
                          autocast_dtype=autocast_dtype(device), tta=self.tta.value,
                          **settings)
        return Job(run,
                   "predicting…", progress=_done_of_total, on_return=self._on_result,
                   stopping="stopped")

    def _volume_job(self, layer, device) -> Job:
        """Predict a lazy layer into the 'large output' zarr; never load it whole."""
        output = self.volume_output.value
        if output is None or str(output) in ("", "."):
            raise InputError("large output: name a .zarr folder for the probabilities")
        output = Path(output).expanduser()
        if output.exists():
            raise InputError(f"{output} exists: choose a new name (nothing is replaced)")
        if not output.parent.is_dir():
            raise InputError(f"large output: {output.parent}: no such folder")
        self._target = (None, layer)
        return Job(partial(ranked_volume_job, self._loaded, full_resolution(layer), output,
                           threshold=self.threshold.value, device=device, tile=self.tile.value,
                           batch_size=self.batch_size.value,
                           autocast_dtype=autocast_dtype(device), tta=self.tta.value),
                   f"predicting {layer.name} block by block into {output}…",
                   progress=_done_of_total, on_return=self._on_volume, stopping="stopped")

    def _on_volume(self, result: RankedVolume) -> None:
        """Show the zarr probabilities, their mask and uncertainty as lazy layers."""
        path = result.path
        source = self._target[1]
        prob = da.from_zarr(str(path))
        membrane = lazy_membrane(prob, threshold=self.threshold.value,
                                 close_gaps=self.close_gaps.value or None)
        mask = da.where(membrane, np.uint8(MEMBRANE), np.uint8(INTERIOR))
        where = {"scale": source.scale, "translate": source.translate}
        self._viewer.add_image(prob, name=PROBABILITY, colormap="magma",
                               contrast_limits=(0.0, 1.0), opacity=0.7,
                               metadata={MARK: PROBABILITY}, **where)
        self._viewer.add_image(lazy_uncertainty(prob, threshold=self.threshold.value,
                                                reach=result.reach),
                               name=UNCERTAINTY, visible=False, metadata={MARK: UNCERTAINTY},
                               **UNCERTAINTY_STYLE, **where)
        layer = self._viewer.add_labels(mask, name=MASK, colormap=LABEL_COLORS,
                                        metadata={MARK: LAZY_MASK}, **where)
        session(self._viewer).set_ranking(layer, result.ranking)
        self.status.setText(f"predicted {source.name} into {path} (lazy layers; cells are "
                            "not labelled for lazy data)")

    def _read_image(self, layer, whole_stack: bool):
        """Return the slice to predict (None: all) and a copy of its data."""
        if layer is None:
            raise InputError("open an EM image first")
        data = full_resolution(layer)
        if layer.rgb or data.ndim not in (2, 3):
            raise InputError(f"{layer.name}: need a grey 2D image or 3D stack, got shape "
                             f"{data.shape}")
        if whole_stack or data.ndim == 2:
            return None, np.array(data)
        z = current_slice(layer, self._viewer.dims.point)
        return z, np.array(data[z])

    def _on_result(self, result: Prediction) -> None:
        z, source = self._target
        shape = full_resolution(source).shape
        self._write(PROBABILITY, result.probabilities, z, shape, self._viewer.add_image,
                    colormap="magma", contrast_limits=(0.0, 1.0), opacity=0.7)
        self._write(UNCERTAINTY, result.uncertainty, z, shape, self._viewer.add_image,
                    visible=False, **UNCERTAINTY_STYLE)  # under the mask, which stays selected
        mask, kept = self._write(MASK, result.mask, z, shape, self._viewer.add_labels,
                                 colormap=LABEL_COLORS, keep=True)
        self._rank(mask, result.ranking, z, shape)
        if result.cells is not None:
            cells = result.cells
            existing = self._existing(CELLS, shape, napari.layers.Labels)
            if z is not None and existing is not None:  # keep labels unique across slices
                cells = np.where(cells > 0, cells + int(existing.data.max()), 0).astype(np.int32)
            self._write(CELLS, cells, z, shape, self._viewer.add_labels)
        where = "the stack" if z is None else f"slice {z}"
        message = f"predicted {where} of {source.name}"
        if kept:
            message += (f"; kept the corrected mask of slice(s) {', '.join(map(str, kept))} "
                        "(clear them in Correct and retrain to replace them)")
        self.status.setText(message)

    def _rank(self, mask, ranking: Ranking, z: int | None, shape: tuple[int, ...]) -> None:
        """Leave the slices' ranking on the mask layer, updating slice ``z`` only if given."""
        if z is not None:
            known = slice_ranking(mask)
            fits = known is not None and known.slices.shape == (shape[0],) \
                and known.regions.shape[1:] == ranking.regions.shape[1:]
            ranking = (known if fits else Ranking.unknown(*shape)).with_slice(z, ranking)
        session(self._viewer).set_ranking(mask, ranking)

    def _existing(self, name, shape, kind):
        layer = self._viewer.layers[name] if name in self._viewer.layers else None
        ok = isinstance(layer, kind) and isinstance(layer.data, np.ndarray)
        return layer if ok and layer.data.shape == shape else None

    def _write(self, name, data, z, shape, add, keep=False, **style) -> tuple[object, list[int]]:
        """Write ``data`` (slice ``z``, or all) into the named layer, adding it full-size.

        Returns the layer written, and with ``keep`` the slices of it marked as
        corrected that kept their content instead of being written.
        """
        kind = napari.layers.Labels if add == self._viewer.add_labels else napari.layers.Image
        layer = self._existing(name, shape, kind)
        if layer is None:
            full = data if z is None else np.zeros(shape, data.dtype)
            if z is not None:
                full[z] = data
            source = self._target[1]
            return add(full, name=name, scale=source.scale, translate=source.translate,
                       metadata={MARK: name}, **style), []
        kept = corrected_slices(layer) if keep else []
        if len(shape) == 2:
            kept = kept[:1]
            if not kept:
                layer.data = data
        elif z is None:
            data[kept] = layer.data[kept]
            layer.data = data
        elif z in kept:
            kept = [z]
        else:
            kept = []
            layer.data[z] = data
            layer.refresh()
        return layer, kept


def _done_of_total(p: PredictProgress) -> tuple[int, int]:
    """Return the tiles, blocks or post-processing steps done, of how many.

    ``p`` is a `PredictProgress`, a `napari_unet.prediction.pipeline.PostProgress` or a
    `napari_unet.prediction.volume.VolumeProgress`: each counts ``done`` of ``total``.
    """
    return p.done, p.total

