"""Correct and retrain: paint the predicted mask, then fine-tune the model on the corrections.

The predicted mask is a Labels layer in the annotation convention, so napari's
paint, fill and erase tools correct it in place (1 = membrane, 2 = interior,
0 = not annotated). The "correct next" list ranks the slices by the prediction's
uncertainty and jumps the viewer to the next one to correct (`correct_next`). Every
slice painted is added to the list of corrected slices (kept in the layer's metadata,
see `session`); the user may add or remove slices by hand. Retrain fine-tunes the
current model with `napari_unet.training.train.train` on the corrected slices and every
slice of the original annotation (`napari_unet.io.labels.retraining_labels`), in the background.
"""

import re
from functools import partial
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, SpinBox
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet.checks import check_pair
from napari_unet.config import RETRAIN_DEFAULTS, Config
from napari_unet.errors import InputError
from napari_unet.io.labels import annotated_slices, retraining_labels, to_annotation
from napari_unet.model.files import BUNDLED, is_bundled, load_model
from napari_unet.training.progress import Event, Progress, TrainResult
from napari_unet.training.samples import pick_validation
from napari_unet.training.train import last_path_for, train

from .correct_next import CorrectNext
from .corrected import CorrectedSlices
from .layers import full_resolution, layer_picker, pick_first
from .plot import PlotWidget
from .prediction import MARK, MASK
from .progress import Smoother, describe_start, describe_step, describe_validation
from .runner import Job, JobWidget
from .session import session
from .training_form import DEFAULT_OUTPUT, device_choices, parse_number

RETRAINED = re.compile(r"-retrained(-\d+)?$")
USER_MODELS = DEFAULT_OUTPUT.parent
"""Where models retrained from a bundled model go (created when needed)."""


def retrained_path(model: Path) -> Path:
    """Return a free file name for a model retrained from ``model``.

    ``model.pt`` gives ``model-retrained.pt``, then ``model-retrained-2.pt``, ...
    A name is free when neither it nor its ``.last`` sibling exists. A bundled
    model's retrained versions go to `USER_MODELS`.
    """
    stem = RETRAINED.sub("", model.stem)
    if is_bundled(model):  # never write into the installed package
        model = USER_MODELS / model.name
    for n in range(1, 10_000):
        path = model.with_name(f"{stem}-retrained{'' if n == 1 else f'-{n}'}{model.suffix}")
        if not path.exists() and not last_path_for(path).exists():
            return path
    raise InputError(f"no free file name for a retrained model next to {model}")


class CorrectWidget(JobWidget):
    """Track the slices corrected on a mask and fine-tune the model on them.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(viewer, parent)
        self._output: Path | None = None
        self._smoother = Smoother()
        self.form = self._make_form(viewer)
        self.slices = CorrectedSlices(viewer)
        self.next_list = CorrectNext(viewer)
        self.next_button = self._next_button()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.plot = PlotWidget(xlabel="step", ylabel="loss", right_label="V_rand")
        self.plot.add_series("train loss", "#4fa3e0")
        self.plot.add_series("V_rand", "#6cc070", axis="right", points=True)
        self.plot.setMinimumHeight(160)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(QLabel("correct next (least sure first, from Prediction):"))
        layout.addWidget(self.next_list)
        layout.addWidget(self.next_button)
        layout.addWidget(QLabel("corrected slices (painting adds the slice):"))
        layout.addWidget(self.slices)
        layout.addLayout(self._slice_buttons())
        layout.addWidget(self.summary)
        layout.addLayout(self._run_buttons())
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, stretch=1)
        self.slices.changed.connect(self._update_summary)
        self.slices.changed.connect(self.next_list.refresh)
        self.mask_layer.changed.connect(self.slices.set_mask)
        self.mask_layer.changed.connect(self.next_list.set_mask)
        self.original.changed.connect(self._update_summary)
        self.model.changed.connect(self._on_model_chosen)
        current = session(viewer)
        current.model_changed.connect(self._follow_model)
        current.ranking_changed.connect(self._on_ranking)
        self.reset_choices()
        if current.model is not None:
            self._follow_model(current.model)
        self.disable_while_running(self.retrain_button)

    # --- construction ----------------------------------------------------------------

    def _make_form(self, viewer) -> Container:
        Image, Labels = napari.layers.Image, napari.layers.Labels
        self.image_layer = layer_picker(viewer, "image", Image, predicted=False)
        self.mask_layer = layer_picker(viewer, "mask", Labels, nullable=True,
                                       tooltip="the predicted mask you correct (1 = membrane, "
                                       "2 = interior, 0 = not annotated)")
        self.original = layer_picker(viewer, "original labels", Labels, predicted=False,
                                     nullable=True,
                                     tooltip="the first annotation: its slices stay in training")
        self.model = FileEdit(label="model", mode="r", filter="*.pt", nullable=True,
                              tooltip="the model to fine-tune (the current model)")
        self.output = FileEdit(label="save to", mode="w", filter="*.pt", nullable=True,
                               tooltip="the retrained model (a new file: nothing is replaced)")
        self.epochs = SpinBox(label="epochs", value=RETRAIN_DEFAULTS["epochs"], min=1,
                              max=100_000)
        self.minutes = FloatSpinBox(label="minutes", value=RETRAIN_DEFAULTS["minutes"], min=0,
                                    max=100_000,
                                    tooltip="time budget (∞: none); stops cleanly and saves")
        self.minutes.native.setSpecialValueText("∞")
        self.lr = LineEdit(label="learning rate", value="",
                           tooltip="empty: the model's own learning rate")
        self.lr.native.setPlaceholderText("the model's")
        self.device = ComboBox(label="device", choices=device_choices(), value="auto")
        return Container(widgets=[self.image_layer, self.mask_layer, self.original, self.model,
                                  self.output, self.epochs, self.minutes, self.lr, self.device])

    def _on_ranking(self, _layer) -> None:
        """Show a new ranking; a mask that Prediction has just added is picked first."""
        self.reset_choices()
        self.next_list.refresh()

    def go_next(self) -> None:
        """Jump the viewer to the next slice to correct, centred on its least sure square."""
        try:
            z = self.next_list.go_next()
        except InputError as err:
            self.report_error(err)
            return
        self.status.setText(f"slice {z}: correct it with the paint tools (or 'Add current "
                            "slice' if it is right as it is), then Next")

    def _next_button(self) -> QPushButton:
        button = QPushButton("Next slice to correct")
        button.setToolTip("go to the least sure slice not corrected yet, centred on its least "
                          "sure region")
        button.clicked.connect(self.go_next)
        return button

    def _slice_buttons(self) -> QHBoxLayout:
        self.add_button = QPushButton("Add current slice")
        self.remove_button = QPushButton("Remove selected")
        self.add_button.clicked.connect(self.add_current_slice)
        self.remove_button.clicked.connect(self.remove_selected)
        row = QHBoxLayout()
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        return row

    def _run_buttons(self) -> QHBoxLayout:
        self.retrain_button = QPushButton("Retrain")
        self.retrain_button.setToolTip("fine-tune the model on the corrected and the originally "
                                       "annotated slices")
        self.stop_button.setToolTip("stop after the current step; the last model is saved")
        self.bundled_button = QPushButton("Bundled model")
        self.bundled_button.setToolTip("start from the bundled ISBI 2012 model instead")
        self.bundled_button.setEnabled(BUNDLED["isbi2012"].is_file())
        self.retrain_button.clicked.connect(self.retrain)
        self.bundled_button.clicked.connect(self.use_bundled_model)
        row = QHBoxLayout()
        for button in (self.retrain_button, self.stop_button, self.bundled_button):
            row.addWidget(button)
        return row

    def use_bundled_model(self) -> None:
        """Fine-tune the bundled ISBI 2012 model (its retrained copy goes to `USER_MODELS`)."""
        self.model.value = BUNDLED["isbi2012"]

    # --- corrected slices ------------------------------------------------------------

    @property
    def corrected(self) -> list[int]:
        """The slices of the mask marked as corrected."""
        return self.slices.corrected

    def set_corrected(self, slices) -> None:
        """Mark exactly these slices of the mask as corrected."""
        self.slices.set_corrected(slices)

    def add_current_slice(self) -> None:
        """Mark the slice shown in the viewer as corrected."""
        try:
            self.slices.add_current()
        except InputError as err:
            self.report_error(err)

    def remove_selected(self) -> None:
        """Unmark the slices selected in the list."""
        self.slices.remove_selected()

    def _original_slices(self) -> list[int]:
        """Return the slices annotated in the original labels (none if unreadable)."""
        original = self.original.value
        if original is None or not isinstance(original.data, np.ndarray):
            return []
        try:
            return annotated_slices(to_annotation(original.data))
        except InputError:
            return []

    def validation_slices(self) -> list[int]:
        """Slices Retrain validates on: original ones only, never a corrected slice."""
        corrected = set(self.corrected)
        return pick_validation([z for z in self._original_slices() if z not in corrected])

    def _update_summary(self, *_) -> None:
        annotated, corrected = set(self._original_slices()), set(self.corrected)
        val = self.validation_slices()
        text = (f"Retrain trains on {len((corrected | annotated) - set(val))} slice(s): "
                f"{len(corrected)} corrected, {len(annotated - corrected - set(val))} from "
                "the original labels; ")
        text += (f"validates on original slice(s) {', '.join(map(str, val))}." if val else
                 "no validation (fewer than 3 original slices besides the corrected ones).")
        self.summary.setText(text)

    # --- model -----------------------------------------------------------------------

    def _follow_model(self, path: Path) -> None:
        self.model.value = path

    def _on_model_chosen(self, *_) -> None:
        path = self.model.value
        if path is None or str(path) in ("", ".") or not Path(path).is_file():
            return
        try:
            self.output.value = retrained_path(Path(path))
        except InputError as err:
            self.report_error(err)

    # --- retraining ------------------------------------------------------------------

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists; pick the predicted mask and the original labels."""
        self.form.reset_choices()
        pick_first(self.mask_layer, lambda layer: layer.metadata.get(MARK) == MASK)
        pick_first(self.original, lambda layer: layer is not self.mask_layer.value)
        if self.mask_layer.value is not self.slices.mask:
            self.slices.set_mask(self.mask_layer.value)
            self.next_list.set_mask(self.mask_layer.value)

    def retrain(self) -> None:
        """Fine-tune the model on the corrected and the originally annotated slices."""
        self.launch(self._retrain_job)

    def _retrain_job(self) -> Job:
        image, labels, init, output, config = self._read_job()
        self._output = output
        self._smoother = Smoother()
        self.plot.clear()
        return Job(partial(train, image, labels, config, output=output, init=init),
                   f"retraining on {len(annotated_slices(labels))} slices…",
                   progress=lambda p: (p.step, p.total_steps), on_yield=self._on_progress,
                   on_return=self._on_trained, on_stopped=self._on_stopped)

    def _read_job(self):
        """Copy the data and freeze the settings, on the main thread."""
        if self.image_layer.value is None:
            raise InputError("choose the image layer")
        if self.slices.mask is None:
            raise InputError("choose the mask layer (Prediction makes one)")
        image = np.array(full_resolution(self.image_layer.value))
        original = self.original.value
        labels = retraining_labels(np.array(self.slices.mask.data), self.corrected,
                                   None if original is None else np.array(original.data))
        check_pair(image, labels)
        init = self.model.value
        if init is None or not Path(init).is_file():
            raise InputError(f"model: choose an existing model file to fine-tune (got {init})")
        output = self.output.value
        if output is None or str(output) in ("", "."):
            raise InputError("save to: name a file for the retrained model")
        output = Path(output).expanduser()
        if output.exists() or last_path_for(output).exists():
            raise InputError(f"{output} exists: choose a new file (nothing is replaced)")
        if output.parent == USER_MODELS:
            USER_MODELS.mkdir(parents=True, exist_ok=True)
        if not output.parent.is_dir():
            raise InputError(f"save to: {output.parent}: no such folder")
        base = load_model(init).config
        return image, labels, Path(init), output, self._config(base)

    def _config(self, base: Config) -> Config:
        """Return the model's own settings with this form's budget, learning rate and device."""
        train = {"epochs": self.epochs.value, "minutes": self.minutes.value or None,
                 "device": self.device.value, "val_slices": tuple(self.validation_slices())}
        if self.lr.value.strip():
            train["lr"] = parse_number(self.lr.value, "learning rate")
        return base.replace(train=train)

    def _on_progress(self, p: Progress) -> None:
        if p.event is Event.START:
            self.status.setText(describe_start(p.metrics))
            return
        if p.event is Event.STEP:
            self.plot.append("train loss", p.step, self._smoother.add(p.loss))
            self.status.setText(describe_step(p))
            return
        self.plot.append("V_rand", p.step, p.metrics.get("v_rand"))
        self.status.setText(describe_validation(p.metrics))

    def _on_trained(self, result: TrainResult) -> None:
        self.progress.setValue(self.progress.maximum())
        best = result.best_path if result.best_path.is_file() else result.last_path
        message = f"retrained ({result.reason}): {best} is now the current model"
        session(self._viewer).set_model(best)
        self.status.setText(message + "; predict again to see it")
        show_info(message)

    def _on_stopped(self) -> None:
        last = last_path_for(self._output)
        kept = self._output if self._output.is_file() else last
        if kept.is_file():
            session(self._viewer).set_model(kept)
        self.status.setText(f"stopped: the last model is in {last}; the current model is "
                            f"{kept}")
