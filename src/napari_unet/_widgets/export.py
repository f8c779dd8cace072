"""Export widget: masks, probabilities and cells to TIFF; save and load the model.

The files are written by the same functions as the plugin's napari writers
(`napari_unet.io.stacks.write_export`), in the background, and never replace a file
unless "overwrite" is ticked, nor ever a file a layer was opened from. Every
target is checked before the first is written.
"""

from functools import partial
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.errors import InputError
from napari_unet.io.stacks import check_export, check_not_inputs, export_paths, write_export
from napari_unet.model.files import load_model, save_model

from .layers import full_resolution, is_predicted, layer_picker, pick_first
from .prediction import CELLS, MASK, PROBABILITY
from .runner import Job, JobWidget
from .session import session

DEFAULT_FOLDER = Path.home() / "napari-unet"
CONVENTIONS = [("255 = membrane, 0 = not", "membrane"), ("ISBI: 0 = membrane, 255 = interior",
                                                          "isbi")]


def export_job(items, *, convention: str, overwrite: bool):
    """Write ``(kind, path, data)`` items one by one, yielding ``(done, total)``.

    Returns
    -------
    paths : list of Path
    """
    written = []
    for done, (kind, path, data) in enumerate(items):
        yield done, len(items)
        written.append(write_export(kind, path, data, convention=convention,
                                    overwrite=overwrite))
    yield len(items), len(items)
    return written


def _is_path(value) -> bool:
    return value is not None and str(value) not in ("", ".")


class ExportWidget(JobWidget):
    """Write the mask, probabilities and cells as TIFF files; save or load the model.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(viewer, parent)
        self.files = self._make_files_form(viewer)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        files = QGroupBox("Masks, probabilities, cells")
        box = QVBoxLayout(files)
        for widget in (self.files.native, self.export_button, self.progress, self.status):
            box.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addWidget(files)
        layout.addWidget(self._model_box())
        layout.addStretch()
        current = session(viewer)
        current.model_changed.connect(self._show_model)
        self._show_model(current.model)
        self.reset_choices()
        self.disable_while_running(self.export_button)

    def _make_files_form(self, viewer) -> Container:
        Labels, Image = napari.layers.Labels, napari.layers.Image
        self.mask = layer_picker(viewer, "mask", Labels, nullable=True,
                                 tooltip="annotation labels: 1 = membrane")
        self.convention = ComboBox(label="mask values", choices=CONVENTIONS, value="membrane")
        self.probabilities = layer_picker(viewer, "probabilities", Image, nullable=True,
                                          tooltip="P(membrane), written as float32")
        self.cells = layer_picker(viewer, "cells", Labels, nullable=True,
                                  tooltip="cell instance labels")
        self.folder = FileEdit(label="folder", mode="d", value=DEFAULT_FOLDER)
        self.name = LineEdit(label="file names", value="",
                             tooltip="NAME_mask.tif, NAME_probabilities.tif, NAME_cells.tif")
        self.name.native.setPlaceholderText("prefix, e.g. the image name")
        self.overwrite = CheckBox(text="overwrite existing files", value=False)
        return Container(widgets=[self.mask, self.convention, self.probabilities, self.cells,
                                  self.folder, self.name, self.overwrite])

    def _model_box(self) -> QGroupBox:
        self.model_label, self.model_status = QLabel(""), QLabel("")
        self.model_label.setWordWrap(True)
        self.model_status.setWordWrap(True)
        self.load_path = FileEdit(label="load", mode="r", filter="*.pt", nullable=True,
                                  tooltip="make a model file the current model")
        self.save_path = FileEdit(label="save as", mode="w", filter="*.pt", nullable=True)
        self.load_button = QPushButton("Load model")
        self.save_button = QPushButton("Save model")
        self.load_button.clicked.connect(self.load_model)
        self.save_button.clicked.connect(self.save_model)
        box = QGroupBox("Model")
        layout = QVBoxLayout(box)
        layout.addWidget(self.model_label)
        for field, button in ((self.load_path, self.load_button),
                              (self.save_path, self.save_button)):
            layout.addWidget(Container(widgets=[field]).native)
            layout.addWidget(button)
        layout.addWidget(self.model_status)
        return box

    # --- layers ----------------------------------------------------------------------

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists; pick the Prediction widget's layers and a file name."""
        self.files.reset_choices()
        for field, name in ((self.mask, MASK), (self.probabilities, PROBABILITY),
                            (self.cells, CELLS)):
            pick_first(field, lambda layer, name=name: layer.name == name
                       and isinstance(layer.data, np.ndarray))  # never a lazy layer by default
        if not self.name.value:
            images = [ly for ly in self._viewer.layers
                      if isinstance(ly, napari.layers.Image) and not is_predicted(ly)]
            if images:
                self.name.value = images[0].name

    # --- files -----------------------------------------------------------------------

    def export(self) -> None:
        """Write the chosen layers to TIFF files in the folder, in the background."""
        self.launch(self._export_job)

    def _export_job(self) -> Job:
        items = self._read_items()
        return Job(partial(export_job, items, convention=self.convention.value,
                           overwrite=self.overwrite.value),
                   "writing…", progress=lambda step: step, on_return=self._on_written)

    def _read_items(self) -> list[tuple[str, Path, np.ndarray]]:
        """Check every target file and copy the layers, on the main thread."""
        layers = {"mask": self.mask.value, "probabilities": self.probabilities.value,
                  "cells": self.cells.value}
        layers = {kind: layer for kind, layer in layers.items() if layer is not None}
        if not _is_path(self.folder.value):
            raise InputError("folder: choose where to write the files")
        if Path(self.folder.value) == DEFAULT_FOLDER:
            DEFAULT_FOLDER.mkdir(parents=True, exist_ok=True)
        paths = export_paths(self.folder.value, self.name.value, layers, overwrite=True)
        check_not_inputs(paths, self._sources())  # before "exists", so as not to suggest it
        export_paths(self.folder.value, self.name.value, layers, overwrite=self.overwrite.value)
        items = []
        for kind, layer in layers.items():
            try:
                items.append((kind, paths[kind],
                              check_export(kind, np.array(full_resolution(layer)))))
            except InputError as err:
                raise InputError(f"{kind} ({layer.name}): {err}") from None
        return items

    def _sources(self) -> dict[str, Path]:
        """Return the files (or zarr folders) the layers were opened from, by layer."""
        return {f"the file of layer {layer.name!r}": Path(layer.source.path)
                for layer in self._viewer.layers if layer.source.path}

    def _on_written(self, paths) -> None:
        message = "wrote " + ", ".join(str(p) for p in paths)
        self.status.setText(message)
        show_info(message)

    # --- model -----------------------------------------------------------------------

    def load_model(self) -> None:
        """Check the chosen model file and make it the current model."""
        path = self.load_path.value
        try:
            if not _is_path(path) or not Path(path).is_file():
                raise InputError(f"load: choose an existing model file (got {path})")
            load_model(path)
        except InputError as err:
            self.report_error(err, self.model_status)
            return
        session(self._viewer).set_model(Path(path))
        self.model_status.setText(f"loaded {path}: it is the current model")

    def save_model(self) -> None:
        """Write a copy of the current model (checked on reading) to a new file."""
        current, path = session(self._viewer).model, self.save_path.value
        try:
            if current is None:
                raise InputError("no current model: train one, or load a model file")
            if not _is_path(path):
                raise InputError("save as: name the new model file")
            path = Path(path).expanduser()
            if path.exists():
                raise InputError(f"{path} exists: choose a new name (nothing is replaced)")
            save_model(path, load_model(current))
        except InputError as err:
            self.report_error(err, self.model_status)
            return
        self.model_status.setText(f"saved a copy as {path}")
        show_info(f"saved the model as {path}")

    def _show_model(self, path: Path | None) -> None:
        if path is None:
            self.model_label.setText("current model: none yet (train one, or load a file)")
            return
        try:
            summary = load_model(path).describe()
        except InputError as err:
            summary = f"unreadable: {err}"
        self.model_label.setText(f"current model: {path}\n{summary}")
