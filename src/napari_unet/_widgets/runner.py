"""One long job at a time for a dock widget: start, stop, progress, errors, closing.

A widget that runs a core generator (training, LR search, prediction, export) derives
from `JobWidget` and keeps only its form and its layer updates. Its start command hands
`JobWidget.launch` a function that reads the form and the layers on the main thread and
returns a `Job`; the job runs in a `napari_unet._widgets.worker.JobWorker`, its records
and result come back to the main thread, and Stop is ``worker.quit()``.
"""

from collections.abc import Callable, Generator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from napari_unet.errors import InputError

from .closing import StopsWhenClosed
from .worker import JobWorker, error_message, start_job

BUSY = "a job is already running: stop it before starting another"
"""The status when a second job is asked for while one runs."""


class SteadyLabel(QLabel):
    """A label as tall empty as with a line of text, so that text appearing moves nothing.

    Qt makes an empty QLabel a pixel shorter than one that shows text. In a napari window
    at its minimum height (the Training widget's form is tall), the status's first text
    at Start and the progress line's at the first step each grew the window by that
    pixel, and the resized canvas was drawn again whole: 80-95 ms stalls of the event
    loop (benchmarks/bench_responsiveness.py).
    """

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(text, parent)
        self._reserve_a_line()

    def changeEvent(self, event: QEvent) -> None:
        """Measure the line again when the font or the style sheet changes."""
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._reserve_a_line()

    def _reserve_a_line(self) -> None:
        text = self.text()
        self.setMinimumHeight(0)
        self.setText("X")
        height = self.minimumSizeHint().height()
        self.setText(text)
        self.setMinimumHeight(height)


@dataclass(frozen=True)
class Job:
    """A job ready to start: its generator, what the status says, where its records go.

    Attributes
    ----------
    run : callable
        Makes the generator, e.g. ``partial(train, image, labels, config)``; it holds
        arrays and frozen configs only, copied on the main thread.
    message : str
        The status while it runs.
    progress : callable, optional
        ``(done, total)`` of a record, for the progress bar.
    on_yield, on_return : callable, optional
        Take each record (after the progress bar) and the result, on the main thread.
    on_stopped : callable, optional
        Called when a job stopped by `JobWidget.stop` has ended without an error.
    stopping : str
        The status from Stop until the job ends.
    """

    run: Callable[[], Generator]
    message: str
    progress: Callable[[Any], tuple[int, int]] | None = None
    on_yield: Callable[[Any], None] | None = None
    on_return: Callable[[Any], None] | None = None
    on_stopped: Callable[[], None] | None = None
    stopping: str = "stopping after the current step…"


class JobWidget(StopsWhenClosed, QWidget):
    """A dock widget that runs one job at a time and stops it when closed or removed.

    It makes the ``status`` label, the ``progress`` bar and the ``stop_button``; the
    subclass lays them out and names its start buttons with `disable_while_running`.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    parent : QWidget, optional
    """

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._worker: JobWorker | None = None
        self._job: Job | None = None
        self._starts: tuple[QWidget, ...] = ()
        self.stopped = self.failed = False
        self.status = SteadyLabel("")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self._worker is not None

    def disable_while_running(self, *buttons: QWidget) -> None:
        """Name the buttons that start jobs: disabled while one runs."""
        self._starts = buttons
        self._set_running(self.running)

    def launch(self, prepare: Callable[[], Job]) -> bool:
        """Start the job ``prepare()`` returns; return whether it started.

        Refused, with a one-line status, while a job runs. ``prepare`` reads the form and
        copies the layers on the main thread; an `InputError` it raises is reported.
        """
        if self._worker is not None:
            self.status.setText(BUSY)
            show_info(BUSY)
            return False
        try:
            job = prepare()
        except InputError as err:
            self.report_error(err)
            return False
        self._job, self.stopped, self.failed = job, False, False
        self.progress.setValue(0)
        self.status.setText(job.message)
        handlers = {"yielded": self._on_yield, "returned": job.on_return,
                    "errored": self._on_error, "finished": self._on_finished}
        self._worker = start_job(job.run, connect={
            signal: handler for signal, handler in handlers.items() if handler is not None})
        self.destroyed.connect(self._worker.quit)
        self._set_running(True)
        return True

    def stop(self) -> None:
        """Ask the running job to stop after its current step (within a second)."""
        if self._worker is not None:
            self._worker.quit()
            self.stopped = True
            self.stop_button.setEnabled(False)
            self.status.setText(self._job.stopping)

    def report_error(self, err: Exception, label: QLabel | None = None) -> None:
        """Say what went wrong in one line: in ``label`` (the status) and a notification."""
        message = error_message(err)
        (label or self.status).setText(f"error: {message}")
        show_error(message)

    def running_changed(self, running: bool) -> None:
        """React to a job starting or ending (the buttons are set already); for subclasses."""

    def _set_running(self, running: bool) -> None:
        for button in self._starts:
            button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.running_changed(running)

    def _on_yield(self, record) -> None:
        job = self._job
        if job.progress is not None:
            done, total = job.progress(record)
            self.progress.setMaximum(total)
            self.progress.setValue(done)
        if job.on_yield is not None:
            job.on_yield(record)

    def _on_error(self, err: Exception) -> None:
        self.failed = True
        self.report_error(err)

    def _on_finished(self) -> None:
        worker, self._worker = self._worker, None
        with suppress(TypeError, RuntimeError):  # already gone with the widget
            self.destroyed.disconnect(worker.quit)
        self._set_running(False)
        if self.stopped and not self.failed and self._job.on_stopped is not None:
            self._job.on_stopped()
