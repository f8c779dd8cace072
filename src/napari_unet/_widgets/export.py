"""Export widget: masks, probabilities and cells to TIFF; save and load the model.

The files are written by the same functions as the plugin's napari writers
(`napari_unet.io.write_export`), in the background, and never replace a file
unless "overwrite" is ticked, nor ever a file a layer was opened from. Every
target is checked before the first is written.
"""

from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, LineEdit
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QGroupBox, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..checkpoint import load_model, save_model
from ..errors import InputError
from ..io import check_export, check_not_inputs, export_paths, write_export
from .prediction import CELLS, MARK, MASK, PROBABILITY
from .session import is_preview, session
from .worker import error_message, start_job

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


def _layers(viewer, kind):
    def choices(_widget):
        return [ly for ly in viewer.layers if isinstance(ly, kind) and not is_preview(ly)]
    return choices


def _is_path(value) -> bool:
    return value is not None and str(value) not in ("", ".")


class ExportWidget(QWidget):
    """Write the mask, probabilities and cells as TIFF files; save or load the model.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._worker = None
        self.files = self._make_files_form(viewer)
        self.export_button = QPushButton("Export")
        self.export_button.clicked.connect(self.export)
        self.progress, self.status = QProgressBar(), QLabel("")
        self.status.setWordWrap(True)
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

    def _make_files_form(self, viewer) -> Container:
        Labels, Image = napari.layers.Labels, napari.layers.Image
        self.mask = ComboBox(label="mask", choices=_layers(viewer, Labels), nullable=True,
                             tooltip="annotation labels: 1 = membrane")
        self.convention = ComboBox(label="mask values", choices=CONVENTIONS, value="membrane")
        self.probabilities = ComboBox(label="probabilities", choices=_layers(viewer, Image),
                                      nullable=True, tooltip="P(membrane), written as float32")
        self.cells = ComboBox(label="cells", choices=_layers(viewer, Labels), nullable=True,
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
            named = [ly for ly in field.choices if ly is not None and ly.name == name
                     and isinstance(ly.data, np.ndarray)]  # never a lazy layer by default
            if field.value is None and named:
                field.value = named[0]
        if not self.name.value:
            images = [ly for ly in self._viewer.layers
                      if isinstance(ly, napari.layers.Image) and MARK not in ly.metadata]
            if images:
                self.name.value = images[0].name

    # --- files -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether an export is being written."""
        return self._worker is not None

    def export(self) -> None:
        """Write the chosen layers to TIFF files in the folder, in the background."""
        if self._worker is not None:
            self._report(InputError("an export is already being written"))
            return
        try:
            items = self._read_items()
        except InputError as err:
            self._report(err)
            return
        self.status.setText("writing…")
        self.export_button.setEnabled(False)
        self._worker = start_job(
            export_job, items, convention=self.convention.value, overwrite=self.overwrite.value,
            connect={"yielded": self._on_progress, "returned": self._on_written,
                     "errored": self._on_error, "finished": self._on_finished})

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
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            try:
                items.append((kind, paths[kind], check_export(kind, np.array(data))))
            except InputError as err:
                raise InputError(f"{kind} ({layer.name}): {err}") from None
        return items

    def _sources(self) -> dict[str, Path]:
        """Return the files (or zarr folders) the layers were opened from, by layer."""
        return {f"the file of layer {layer.name!r}": Path(layer.source.path)
                for layer in self._viewer.layers if layer.source.path}

    def _on_progress(self, step) -> None:
        done, total = step
        self.progress.setMaximum(total)
        self.progress.setValue(done)

    def _on_written(self, paths) -> None:
        message = "wrote " + ", ".join(str(p) for p in paths)
        self.status.setText(message)
        show_info(message)

    def _on_error(self, err: Exception) -> None:
        self._report(err)

    def _on_finished(self) -> None:
        self._worker = None
        self.export_button.setEnabled(True)

    # --- model -----------------------------------------------------------------------

    def load_model(self) -> None:
        """Check the chosen model file and make it the current model."""
        path = self.load_path.value
        try:
            if not _is_path(path) or not Path(path).is_file():
                raise InputError(f"load: choose an existing model file (got {path})")
            load_model(path)
        except InputError as err:
            self._report(err, self.model_status)
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
            self._report(err, self.model_status)
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

    def _report(self, err: Exception, label: QLabel | None = None) -> None:
        message = error_message(err)
        (label or self.status).setText(f"error: {message}")
        show_error(message)
