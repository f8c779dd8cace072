"""Training widget: train a U-Net in the background and watch it learn.

A thin adapter over `training.train.train` and `training.lr_find.lr_find`: the
form's layers are copied and its settings frozen into a `Config` on the main thread, the
generator runs in a `JobWorker`, and its records come back to the main thread to move the
progress bar, the curves and the "validation prediction" layer. Stop is ``worker.quit()``;
the generator then saves the last model on the worker thread.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import napari
import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_info
from napari.utils.theme import get_theme
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QTabWidget, QVBoxLayout, QWidget

from napari_unet.training.lr_find import LRResult, LRStep, lr_find
from napari_unet.training.progress import Event, Progress, TrainResult
from napari_unet.training.train import last_path_for, train

from .layers import PREVIEW, slice_translate
from .plot import PlotWidget
from .progress import Smoother, describe_start, describe_step, describe_validation
from .runner import Job, JobWidget, SteadyLabel
from .session import session
from .staged import Turns, adding_steps
from .training_form import TrainingForm, first_validation_slice
from .worker import import_in_background

COLORS = {"train": "#4fa3e0", "val": "#f0a030", "v_rand": "#6cc070", "raw": "#7d8590"}
VALIDATION_PREVIEW = "validation prediction"
"""Name of the layer that shows the live prediction of the first validation slice."""


@dataclass
class Run:
    """The training run in progress, as its record handlers need it."""

    output: Path | None = None
    preview_slice: int | None = None
    ndim: int = 2
    scale: np.ndarray | None = None
    translate: np.ndarray | None = None
    step_epoch: int | None = None  # of the last step: a validation in it closes a time budget


class TrainingWidget(JobWidget):
    """Train a U-Net on the chosen layers; plot its loss and preview its prediction.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(viewer, parent)
        self._run = Run()
        self._preview = None
        self._turns = Turns(self)  # adds the preview layer
        self._smoother = Smoother()
        self.suggestion: float | None = None
        self.lr_steps = 100
        self.form = TrainingForm(viewer)
        self._build_buttons()
        self.progress.setFormat("%p%")
        self.progress_label = SteadyLabel("")
        self.progress_label.setWordWrap(True)  # else a long line widens the dock, not the canvas
        self._build_plots()
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(self._run_row)
        layout.addWidget(self.progress)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.status)
        layout.addWidget(self.plots, stretch=1)
        viewer.events.theme.connect(self._follow_theme)
        self._follow_theme()
        self.form.preset.changed.connect(self._share_preset)
        self.disable_while_running(self.start_button, self.lr_button)
        import_in_background("torch._dynamo")  # the optimizers' first use would import it

    # --- construction ----------------------------------------------------------------

    def _build_buttons(self) -> None:
        self.lr_button = QPushButton("Find")
        self.lr_button.setToolTip("find a learning rate: sweep it over 100 updates and plot "
                                  "the loss (Smith 2017)")
        self.use_lr_button = QPushButton("Use")
        self.use_lr_button.setToolTip("use the learning rate the sweep suggests")
        self.start_button = QPushButton("Start training")
        self.stop_button.setToolTip("stop after the current step; the last model is saved")
        self.lr_button.clicked.connect(self.find_lr)
        self.use_lr_button.clicked.connect(self.use_suggestion)
        self.start_button.clicked.connect(self.start)
        self.form.attach("lr", self.lr_button, self.use_lr_button)
        self._run_row = QHBoxLayout()
        self._run_row.addWidget(self.start_button)
        self._run_row.addWidget(self.stop_button)

    def _build_plots(self) -> None:
        self.loss_plot = PlotWidget(xlabel="step", ylabel="loss", right_label="V_rand")
        self.loss_plot.add_series("train loss", COLORS["train"])
        self.loss_plot.add_series("val loss", COLORS["val"], points=True)
        self.loss_plot.add_series("V_rand", COLORS["v_rand"], axis="right", points=True)
        self.lr_plot = PlotWidget(xlabel="learning rate", ylabel="loss", log_x=True)
        self.lr_plot.add_series("loss", COLORS["raw"])
        self.lr_plot.add_series("smoothed", COLORS["train"])
        self.plots = QTabWidget()
        self.plots.addTab(self.loss_plot, "training")
        self.plots.addTab(self.lr_plot, "learning rate")

    def _follow_theme(self, *_) -> None:
        theme = get_theme(self._viewer.theme)
        for plot in (self.loss_plot, self.lr_plot):
            plot.set_colors(background=theme.background.as_hex(),
                            axes=theme.highlight.as_hex(), text=theme.text.as_hex())

    def _share_preset(self, *_) -> None:
        """Give the chosen preset's weight map and augmentation to the previews and training."""
        preset = self.form.preset_config()
        session(self._viewer).set_settings(weights=preset.weights, augment=preset.augment)

    # --- commands --------------------------------------------------------------------

    def start(self) -> None:
        """Start training on copies of the chosen layers (refused while a job runs)."""
        self.launch(self._training_job)

    def find_lr(self) -> None:
        """Run the learning-rate range test with the form's settings and plot it."""
        self.launch(self._lr_job)

    def use_suggestion(self) -> None:
        """Put the LR finder's suggestion into the learning-rate field."""
        if self.suggestion is not None:
            self.form.lr.value = f"{self.suggestion:.3g}"

    def reset_choices(self, *_) -> None:
        """Refresh the layer lists (napari calls this when layers change)."""
        self.form.reset_choices()

    def running_changed(self, running: bool) -> None:
        """Offer the suggestion only between jobs, once there is one."""
        self.use_lr_button.setEnabled(not running and self.suggestion is not None)

    # --- training --------------------------------------------------------------------

    def _training_job(self) -> Job:
        image, labels = self.form.read_data()
        config = self.form.config(base=session(self._viewer).training_base())
        output, init, resume = self.form.read_paths()
        z = first_validation_slice(labels, config.train.val_slices)
        output.parent.mkdir(parents=True, exist_ok=True)
        layer = self.form.image_layer.value
        self._run = Run(output, z, image.ndim, np.asarray(layer.scale),
                        np.asarray(layer.translate))
        self._smoother = Smoother()
        self.loss_plot.clear()
        self.plots.setCurrentWidget(self.loss_plot)
        self.progress_label.setText("")
        return Job(partial(train, image, labels, config, output=output, init=init,
                           resume=resume),
                   "training…", progress=lambda p: (p.step, p.total_steps),
                   on_yield=self._on_progress, on_return=self._on_trained,
                   on_stopped=self._on_stopped)

    def _on_progress(self, p: Progress) -> None:
        if p.event is Event.START:
            self.status.setText(describe_start(p.metrics))
            return
        self.progress_label.setText(describe_step(p))
        if p.event is Event.STEP:
            self._run.step_epoch = p.epoch
            self.loss_plot.append("train loss", p.step, self._smoother.add(p.loss))
            return
        self.loss_plot.append("val loss", p.step, p.metrics.get("val_loss"))
        self.loss_plot.append("V_rand", p.step, p.metrics.get("v_rand"))
        # A whole epoch's validation counts it; the time budget's comes in the last step's.
        self.status.setText(describe_validation(p.metrics, final=p.epoch == self._run.step_epoch))
        if p.preview is not None:
            self._run.preview_slice = p.preview_slice
            self._show_preview(p.preview)

    def _on_trained(self, result: TrainResult) -> None:
        self.progress.setValue(self.progress.maximum())
        if result.best_path is not None and result.best_path.is_file():
            session(self._viewer).set_model(result.best_path)  # Prediction etc. follow it
        message = (f"finished ({result.reason}): best model {result.best_path}, "
                   f"last model {result.last_path}")
        self.status.setText(message)
        show_info(message)

    def _on_stopped(self) -> None:
        self.status.setText(f"stopped: the last model is in {last_path_for(self._run.output)}")

    def _show_preview(self, preview: np.ndarray) -> None:
        """Show P(membrane) of the first validation slice as a layer on that slice."""
        run, viewer = self._run, self._viewer
        index = run.preview_slice if run.ndim == 3 else None  # one slice of a stack, in place
        translate = slice_translate(run.translate, run.scale, index)
        data = preview if index is None else preview[None]
        if self._preview is not None and (self._preview in viewer.layers or self._turns.pending):
            self._preview.data = data
            if not np.array_equal(self._preview.translate, translate):  # each set refreshes
                self._preview.translate = translate
            return
        # Added over a few turns of the loop, unselected (see `staged`); then the view
        # goes to its slice, at a turn of its own.
        self._preview = Image(
            data, name=VALIDATION_PREVIEW, colormap="magma", contrast_limits=(0.0, 1.0),
            opacity=0.7, scale=run.scale, translate=translate, metadata={PREVIEW: True})
        self._turns.add(*adding_steps(viewer, self._preview))
        if run.ndim == 3:
            self._turns.add(partial(viewer.dims.set_point, 0, translate[0]))

    # --- learning-rate search --------------------------------------------------------

    def _lr_job(self) -> Job:
        image, labels = self.form.read_data()
        config = self.form.config(base=session(self._viewer).training_base())
        self.suggestion = None
        self.lr_plot.clear()
        self.plots.setCurrentWidget(self.lr_plot)
        self.progress_label.setText("")
        return Job(partial(lr_find, image, labels, config, steps=self.lr_steps),
                   "sweeping the learning rate…", progress=lambda p: (p.step, p.steps),
                   on_yield=self._on_lr_step, on_return=self._on_lr_found,
                   on_stopped=lambda: self.status.setText("stopped"))

    def _on_lr_step(self, point: LRStep) -> None:
        self.progress_label.setText(f"learning rate {point.lr:.2g} · loss {point.smoothed:.4f}")
        self.lr_plot.append("loss", point.lr, point.loss)
        self.lr_plot.append("smoothed", point.lr, point.smoothed)
        smoothed = self.lr_plot.series["smoothed"].ys
        if smoothed:  # from the lowest loss to half again the first: the diverging tail is cut
            low, first = min(smoothed), smoothed[0]
            self.lr_plot.set_ylim(low - 0.1 * (first - low), 1.5 * first)

    def _on_lr_found(self, result: LRResult) -> None:
        self.progress.setValue(self.progress.maximum())
        self.suggestion = result.suggestion
        if result.suggestion is None:
            self.status.setText("no suggestion: the loss did not fall during the sweep")
            return
        self.lr_plot.set_marker(result.suggestion, f"suggested {result.suggestion:.2g}")
        self.use_lr_button.setText(f"Use {result.suggestion:.2g}")
        self.status.setText(f"suggested learning rate: {result.suggestion:.3g} (click "
                            f"'Use {result.suggestion:.2g}')")
