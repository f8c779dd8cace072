"""Export widget: masks and probabilities to TIFF; the model saved, loaded, or packaged.

The current model is written as a bioimage.io package by
`napari_unet.bioimageio.export.export_job`, in the background, with its steps as progress.

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
from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.bioimageio.export import ExportSettings
from napari_unet.bioimageio.export import export_job as package_job
from napari_unet.errors import InputError
from napari_unet.io.stacks import check_export, check_not_inputs, export_paths, write_export
from napari_unet.model.files import load_model, save_model

from .layers import full_resolution, is_predicted, layer_picker, pick_first
from .prediction import CELLS, MASK, PROBABILITY
from .runner import Job, JobWidget
from .session import session

DEFAULT_FOLDER = Path.home() / "napari-unet"
DEFAULT_PACKAGE = DEFAULT_FOLDER / "model.zip"
LICENSES = ["CC-BY-4.0", "MIT", "BSD-3-Clause", "Apache-2.0", "CC0-1.0", "GPL-3.0-or-later"]
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
    """Write the masks as TIFF files; save or load the model; export it to bioimage.io.

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
        for widget in (self.files.native, self.export_button):
            box.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addWidget(files)
        layout.addWidget(self._model_box())
        layout.addWidget(self._package_box())
        layout.addWidget(self.progress)  # of the files or of the package
        layout.addWidget(self.status)
        layout.addStretch()
        current = session(viewer)
        current.model_changed.connect(self._show_model)
        self._show_model(current.model)
        self.reset_choices()
        self.disable_while_running(self.export_button, self.package_button)

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
            row = QHBoxLayout()  # the button beside its file: the dock's height is scarce
            row.addWidget(Container(widgets=[field]).native, stretch=1)
            row.addWidget(button)
            layout.addLayout(row)
        layout.addWidget(self.model_status)
        return box

    def _package_box(self) -> QGroupBox:
        self.package_name = LineEdit(label="name", value="",
                                     tooltip="5 to 128 letters, digits, spaces and _+-(); "
                                             "empty: napari-unet and the model file's name")
        self.package_name.native.setPlaceholderText("napari-unet MODEL")
        self.authors = LineEdit(label="authors", value="",
                                tooltip="the people who made the model, separated by commas")
        self.authors.native.setPlaceholderText("Jane Doe, John Roe")
        self.description = LineEdit(label="description", value="",
                                    tooltip="one or two sentences; empty: a default one")
        self.license = ComboBox(label="license", choices=LICENSES, value="CC-BY-4.0")
        self.tags = LineEdit(label="tags", value="",
                             tooltip="added to the default tags, separated by commas")
        self.package_path = FileEdit(label="output", mode="w", filter="*.zip",
                                     value=DEFAULT_PACKAGE, tooltip="the package, a .zip file")
        self.package_overwrite = CheckBox(text="overwrite", value=False,
                                          tooltip="replace an existing package")
        self.package_check = CheckBox(text="test with bioimageio.core", value=True,
                                      tooltip="run bioimageio.core's test before writing: a "
                                              "package that fails is not written")
        options = Container(widgets=[self.package_overwrite, self.package_check],
                            layout="horizontal", labels=False)
        options.margins = (0, 0, 0, 0)
        self.package_form = Container(widgets=[
            self.package_name, self.authors, self.description, self.license, self.tags,
            self.package_path, options])
        self.package_button = QPushButton("Export bioimage.io package")
        self.package_button.clicked.connect(self.export_package)
        box = QGroupBox("bioimage.io package (of the current model)")
        layout = QVBoxLayout(box)
        layout.addWidget(self.package_form.native)
        layout.addWidget(self.package_button)
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

    # --- bioimage.io package ----------------------------------------------------------

    def export_package(self) -> None:
        """Write the current model as a bioimage.io package, in the background."""
        self.launch(self._package_job)

    def _package_job(self) -> Job:
        """Read the form on the main thread; `package_job` checks it before writing."""
        model = session(self._viewer).model
        if model is None:
            raise InputError("no current model: train one, or load a model file")
        output = self.package_path.value
        if not _is_path(output):
            raise InputError("output: name the package's .zip file")
        output = Path(output).expanduser()
        if output == DEFAULT_PACKAGE:
            DEFAULT_FOLDER.mkdir(parents=True, exist_ok=True)
        if output.is_file() and not self.package_overwrite.value:
            raise InputError(f"{output} exists; tick 'overwrite' to replace it")
        settings = ExportSettings(
            name=self.package_name.value.strip() or None, authors=_split(self.authors.value),
            description=self.description.value.strip() or None, license=self.license.value,
            tags=_split(self.tags.value))
        return Job(partial(package_job, model, output, settings,
                           overwrite=self.package_overwrite.value,
                           check=self.package_check.value),
                   f"exporting {Path(model).name} to {output}…",
                   progress=lambda p: (p.done, p.total),
                   on_yield=lambda p: self.status.setText(f"{p.step}…"),
                   on_return=self._on_package)

    def _on_package(self, path: Path) -> None:
        self.progress.setValue(self.progress.maximum())
        checked = "tested with bioimageio.core" if self.package_check.value else "not tested"
        message = f"wrote the bioimage.io package {path} ({checked})"
        self.status.setText(message)
        show_info(message)


def _split(text: str) -> tuple[str, ...]:
    """Return the comma-separated items of ``text``, stripped, without empty ones."""
    return tuple(item.strip() for item in text.split(",") if item.strip())
