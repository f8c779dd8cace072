"""The Training widget's form: layers, settings that matter, model files; builds a `Config`.

`config_from_form` and `first_validation_slice` are pure (no Qt) and could live in
the core; `check_model_output` words the core's rules for model files
(`napari_unet.model.files.check_model_files`) in the form's terms.
"""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QWidget

from napari_unet.checks import check_pair
from napari_unet.config import (
    PRESET_HELP,
    PRESETS,
    Config,
    ModelConfig,
    config_for_preset,
    parse_slices,
    resolve_preset,
)
from napari_unet.devices import available_devices, pick_device
from napari_unet.errors import InputError
from napari_unet.io.labels import label_convention
from napari_unet.model.files import BUNDLED, check_model_files
from napari_unet.training.samples import split_slices
from napari_unet.training.train import last_path_for

from .layers import full_resolution, layer_picker, pick_first

DEFAULT_OUTPUT = Path.home() / "napari-unet" / "model.pt"
START_CHOICES = [
    ("scratch", "scratch"),
    ("the bundled ISBI 2012 model", "bundled"),
    ("a model's weights (fine-tune)", "init"),
    ("resume the output's last model", "resume"),
]
if not BUNDLED["isbi2012"].is_file():  # an installation without it
    START_CHOICES.remove(("the bundled ISBI 2012 model", "bundled"))
MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
PRESET_FIELDS = ("depth", "base_channels", "padding", "tile", "batch_size", "optimizer", "lr")
"""Form fields a preset fills in (its other settings: batch norm, weights, augmentation)."""


def parse_number(text: str, what: str) -> float:
    """Parse a number typed by the user (``'0.01'``, ``'1e-3'``), naming the field on error."""
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{what}: not a number: {text!r}") from None


def config_from_form(values: Mapping[str, Any], *, base: Config | None = None) -> Config:
    """Build the frozen `Config` of a run from form values.

    Parameters
    ----------
    values : mapping
        Fields of `ModelConfig` and `TrainConfig` by name. ``lr`` may be text;
        ``val_slices`` may be text (``'5,15,25'``, empty: automatic); ``minutes``
        0 means no time limit.
    base : Config, optional
        Settings the form does not show (weights, augmentation, ...); defaults to
        the paper's.

    Returns
    -------
    config : Config

    Raises
    ------
    InputError
        Naming the field that is wrong.
    """
    values = dict(values)
    if isinstance(values.get("lr"), str):
        values["lr"] = parse_number(values["lr"], "learning rate")
    if isinstance(values.get("val_slices"), str):
        values["val_slices"] = parse_slices(values["val_slices"])
    if values.get("minutes") == 0:
        values["minutes"] = None
    model = {name: values.pop(name) for name in MODEL_FIELDS & set(values)}
    return (base or Config()).replace(model=model, train=values)


def first_validation_slice(labels: np.ndarray, val_slices: tuple[int, ...] | None) -> int | None:
    """Return the slice whose prediction `training.train.train` previews (None: no validation).

    Raises
    ------
    InputError
        When the labels hold no annotation or a validation slice is outside the stack.
    """
    stack = labels[None] if labels.ndim == 2 else labels
    # Only which slices hold annotation matters: ISBI labels are annotated everywhere.
    # Converting them (`labels.to_annotation`) held the GUI ~130 ms at every Start.
    if label_convention(stack) == "isbi":
        stack = np.ones((len(stack), 1, 1), np.uint8)
    _, val = split_slices(stack, val_slices)
    return val[0] if val else None


def check_model_output(output: Path, inputs: Mapping[str, Path], *, replace: bool) -> None:
    """Refuse a "save model to" path that would lose a file: the rules of ``train -o``.

    `napari_unet.model.files.check_model_files`, with messages that name the form's
    fields: the model and its last model (`napari_unet.training.train.last_path_for`)
    may be neither one of ``inputs`` nor a bundled model, whatever ``replace`` says;
    an existing one (an earlier run's) is replaced only with ``replace``.

    Parameters
    ----------
    output : Path
        The best model's file.
    inputs : mapping of str to Path
        The files the run reads, by how the message names them.
    replace : bool
        Whether existing model files may be replaced ('overwrite' ticked, or resuming).

    Raises
    ------
    InputError
        In one line, naming the file.
    """
    check_model_files(output, last_path_for(output), inputs, replace=replace,
                      names=("save model to:", "save model to: its last model"),
                      to_replace="tick 'overwrite', choose another file, or resume it")


def device_choices() -> list[tuple[str, str]]:
    """Return (label, config value) pairs: 'auto' (naming what it picks) and each device kind."""
    choices = [(f"auto ({pick_device('auto')})", "auto")]
    for name in available_devices():
        kind = name.split(":")[0]
        if kind not in [value for _, value in choices]:
            choices.append((name if kind == name else f"{kind} ({name})", kind))
    return choices


ROWS = [
    ("image_layer",), ("labels_layer",), ("preset",), ("depth", "base_channels"),
    ("padding", "tile"), ("optimizer", "batch_size"), ("lr", None), ("epochs", "minutes"),
    ("val_slices",), ("device",), ("start_from",), ("init",), ("output",), ("overwrite",),
]
"""The form's layout: one or two fields a row (None: room for buttons, see `attach`)."""


class TrainingForm:
    """The settings of a training run, with the defaults of `Config`.

    The fields are magicgui widgets (``form.depth.value``); ``form.native`` is the
    QWidget that lays them out, two short ones a row.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose layers the image and labels pickers list.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._make_fields(viewer)
        self.native = QWidget()
        self._grid = QGridLayout(self.native)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._labels, self._rows = {}, {}
        for row, names in enumerate(ROWS):
            for column, name in enumerate(names):
                if name is not None:
                    self._rows[name] = row
                    self._place(row, 2 * column, name, span=3 if len(names) == 1 else 1)
        self._grid.setColumnStretch(1, 1)
        self._grid.setColumnStretch(3, 1)
        self.start_from.changed.connect(lambda value: self._show("init", value == "init"))
        self.preset.changed.connect(self.apply_preset)
        self.device.changed.connect(self._update_auto_label)
        self._show("init", False)
        self.apply_preset()
        self.reset_choices()
        pick_first(self.labels_layer, lambda layer: isinstance(layer, napari.layers.Labels))

    def _make_fields(self, viewer) -> None:
        t, m = Config().train, Config().model
        self.preset = ComboBox(
            label="preset", choices=self._preset_choices(), value="auto",
            tooltip="starting settings; the fields below override them\n" +
                    "\n".join(f"{name}: {text}" for name, text in PRESET_HELP.items()))
        self.image_layer = layer_picker(viewer, "image", napari.layers.Image)
        self.labels_layer = layer_picker(viewer, "labels", napari.layers.Labels,
                                         napari.layers.Image, nullable=True)
        self.depth = SpinBox(label="depth", value=m.depth, min=1, max=8,
                             tooltip="resolution levels of the U-Net (5 in the paper)")
        self.base_channels = SpinBox(label="width", value=m.base_channels, min=1, max=512,
                                     tooltip="channels of the first level (64 in the paper)")
        self.padding = ComboBox(label="padding", choices=["valid", "same"], value=m.padding,
                                tooltip="valid: unpadded convolutions, as in the paper")
        self.tile = SpinBox(label="tile", value=t.tile, min=8, max=4096,
                            tooltip="side of the output tile in pixels (388 in the paper)")
        self.batch_size = SpinBox(label="batch", value=t.batch_size, min=1, max=256,
                                  tooltip="tiles per step (1 in the paper)")
        self.optimizer = ComboBox(label="optimizer", choices=["sgd", "adam"], value=t.optimizer,
                                  tooltip="sgd: momentum 0.99, as in the paper")
        self.lr = LineEdit(label="learning rate", value=f"{t.lr:g}",
                           tooltip="try 'Find learning rate' below")
        self.epochs = SpinBox(label="epochs", value=t.epochs, min=1, max=100_000)
        self.minutes = FloatSpinBox(label="minutes", value=0, min=0, max=100_000,
                                    tooltip="time budget (∞: none); stops cleanly and saves")
        self.minutes.native.setSpecialValueText("∞")
        self.val_slices = LineEdit(label="validation", value="",
                                   tooltip="slices kept for validation, never trained on")
        self.val_slices.native.setPlaceholderText("slices, e.g. 5,15,25 (empty: automatic)")
        self.device = ComboBox(label="device", choices=device_choices(), value="auto")
        self.start_from = ComboBox(label="start from", choices=START_CHOICES, value="scratch")
        self.init = FileEdit(label="initial model", mode="r", filter="*.pt", nullable=True)
        self.output = FileEdit(label="save model to", mode="w", filter="*.pt",
                               value=DEFAULT_OUTPUT,
                               tooltip="the best model; the last one goes next to it (.last.pt)")
        self.overwrite = CheckBox(label="overwrite an existing model file", value=False)

    def _preset_choices(self) -> list[tuple[str, str]]:
        device = self.device.value if hasattr(self, "device") else "auto"
        auto = resolve_preset("auto", device)
        return [(f"auto ({auto})", "auto")] + [(name, name) for name in PRESETS]

    def _update_auto_label(self, *_) -> None:
        """Name what 'auto' means on the new device; refill the fields if that changed.

        Only when they still hold what the preset filled in: never over the user's values.
        """
        self.preset.native.setItemText(0, self._preset_choices()[0][0])
        changed = resolve_preset(self.preset.value, self.device.value) != self._applied
        if changed and self._field_values() == self._applied_values:
            self.apply_preset()

    def _field_values(self) -> dict[str, Any]:
        return {name: getattr(self, name).value for name in PRESET_FIELDS}

    def preset_config(self) -> Config:
        """Return the chosen preset's `Config` for the chosen device."""
        return config_for_preset(self.preset.value, device=self.device.value)

    def apply_preset(self, *_) -> None:
        """Fill the preset's network and optimizer settings into the fields."""
        self._applied = resolve_preset(self.preset.value, self.device.value)
        config = self.preset_config()
        for name in PRESET_FIELDS:
            section = config.model if name in MODEL_FIELDS else config.train
            value = getattr(section, name)
            getattr(self, name).value = f"{value:g}" if name == "lr" else value
        self._applied_values = self._field_values()

    def _place(self, row, column, name, span) -> None:
        widget = getattr(self, name)
        if not isinstance(widget, CheckBox):
            self._labels[name] = QLabel(widget.label)
            self._labels[name].setToolTip(widget.tooltip or "")
            self._grid.addWidget(self._labels[name], row, column)
        self._grid.addWidget(widget.native, row, column + 1, 1, span)

    def attach(self, name: str, *widgets: QWidget) -> None:
        """Put Qt widgets (buttons) in the free half of a field's row."""
        box = QWidget()
        layout = QHBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in widgets:
            layout.addWidget(widget)
        self._grid.addWidget(box, self._rows[name], 2, 1, 2)

    def _show(self, name, visible) -> None:
        getattr(self, name).native.setVisible(visible)
        self._labels[name].setVisible(visible)

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists (when layers are added, removed or renamed)."""
        self.image_layer.reset_choices()
        self.labels_layer.reset_choices()

    def settings(self) -> dict[str, Any]:
        """Return the form's config fields by name (as typed: ``lr`` and slices are text)."""
        names = ("depth", "base_channels", "padding", "tile", "batch_size", "optimizer", "lr",
                 "epochs", "minutes", "val_slices", "device")
        return {name: getattr(self, name).value for name in names}

    def config(self, base: Config | None = None) -> Config:
        """Return the run's `Config`: the preset, ``base``'s weights and augmentation, the fields.

        See `config_from_form`; without ``base`` the preset's weights and augmentation.
        """
        preset = self.preset_config()
        if base is not None:
            preset = dataclasses.replace(preset, weights=base.weights, augment=base.augment)
        return config_from_form(self.settings(), base=preset)

    def read_data(self) -> tuple[np.ndarray, np.ndarray]:
        """Copy the chosen image and labels and check that they can train together."""
        if self.image_layer.value is None:
            raise InputError("choose an image layer (File > Open, or File > Open Sample)")
        if self.labels_layer.value is None:
            raise InputError("choose a labels layer: training needs annotation "
                             "(1 = membrane, 2 = interior)")
        image = np.array(full_resolution(self.image_layer.value))  # copies, on the main thread
        labels = np.array(full_resolution(self.labels_layer.value))
        check_pair(image, labels)
        return image, labels

    def read_paths(self) -> tuple[Path, Path | None, Path | None]:
        """Return (output, init, resume) model paths, refusing to lose a file.

        See `check_model_output`: the output is never an input (the files of the
        image and labels layers, the initial model) nor a bundled model, and
        replaces an earlier run's files only with 'overwrite' or when resuming.
        """
        output = Path(self.output.value).expanduser()
        start = self.start_from.value
        init = self._init_model()
        resume = last_path_for(output) if start == "resume" else None
        check_model_output(output, self._inputs(init),
                           replace=resume is not None or self.overwrite.value)
        if resume is not None and not resume.is_file():
            raise InputError(f"nothing to resume: {resume} does not exist")
        return output, init, resume

    def _init_model(self) -> Path | None:
        """Return the model the run starts from (None: scratch or resume)."""
        start = self.start_from.value
        if start == "bundled":
            return BUNDLED["isbi2012"]
        if start != "init":
            return None
        init = self.init.value
        if init is None or not Path(init).expanduser().is_file():
            raise InputError(f"initial model: choose an existing model file (got {init})")
        return Path(init).expanduser()

    def _inputs(self, init: Path | None) -> dict[str, Path]:
        """Return the files the run reads: the chosen layers' (when opened from one), init."""
        inputs = {f"the file of {kind} layer {layer.name!r}": Path(layer.source.path)
                  for kind, layer in (("image", self.image_layer.value),
                                      ("labels", self.labels_layer.value))
                  if layer is not None and layer.source.path}
        if init is not None:
            inputs["the initial model"] = init
        return inputs
