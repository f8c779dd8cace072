"""Run a core progress generator (training, LR search, prediction) in a napari worker."""

import gc
import importlib
import os
import sys
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager, suppress

from napari.qt.threading import GeneratorWorker, create_worker
from qtpy.QtCore import QThread

from napari_unet.devices import reserve_gui_core
from napari_unet.errors import InputError
from napari_unet.training.progress import TrainingError

NICENESS = 10
"""How far below the GUI thread's CPU priority a job runs (a Linux nice increment)."""


class JobFailed(Exception):
    """A job raised a RuntimeError; the original is the ``__cause__``."""


def error_message(err: Exception) -> str:
    """Phrase a job's error in one line: a user-facing error's message, else its type too."""
    if isinstance(err, JobFailed) and err.__cause__ is not None:
        err = err.__cause__
    if isinstance(err, InputError | TrainingError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _relay(job: Generator):
    """Yield the job's records and return its result, re-raising RuntimeErrors as JobFailed.

    superqt takes a RuntimeError from a worker for a deleted Qt object and then emits
    neither ``errored`` nor ``finished``; `napari_unet.training.progress.TrainingError` is one.
    """
    try:
        return (yield from job)
    except RuntimeError as err:
        raise JobFailed(str(err)) from err


class JobWorker(GeneratorWorker):
    """A generator worker that closes its job on the worker thread when it ends or is quit.

    superqt's worker leaves a quit generator suspended, to be closed whenever it is garbage
    collected, on any thread. Closing it here, before ``finished`` is emitted, lets the job
    clean up in order: `napari_unet.training.train.train` saves the last model when closed.

    Parameters
    ----------
    func : callable
        A generator function (the job).
    *args, **kwargs
        Its arguments.
    """

    def __init__(self, func: Callable[..., Generator], *args, **kwargs):
        job = func(*args, **kwargs)
        super().__init__(_relay, job)
        self._job = job

    def work(self):
        """Drive the job below the GUI's CPU priority; close it on this thread whatever happens."""
        with below_the_gui():
            try:
                return super().work()
            finally:
                self._job.close()


def import_in_background(*names: str) -> None:
    """Import modules in a background thread now, not in a job later.

    torch imports ``torch._dynamo`` when it builds its first optimizer: about a second of
    imports that hold the GIL in long stretches, so a job that did it stalled the GUI
    for 100-200 ms at every first Start. Begun when a widget opens, it is done by the
    time the form is filled in (a job that needs it sooner waits for it, as imports do).
    """
    missing = [name for name in names if name not in sys.modules]
    if missing:
        threading.Thread(target=_import, args=missing, name="napari-unet imports",
                         daemon=True).start()


def _import(*names: str) -> None:
    with below_the_gui():
        for name in names:
            with suppress(ImportError):
                importlib.import_module(name)


@contextmanager
def below_the_gui():
    """Run the calling thread at a lower CPU priority than the GUI (main) thread.

    A training job keeps a core busy. At equal priority napari's redraws wait for it:
    on 2 cores under Xvfb, moving the dims slider stalled the event loop 2-3 times
    longer while training ran, and as long as without training once the training
    thread was niced (benchmarks/bench_responsiveness.py). When the GUI is idle the
    job still gets the whole core. Linux sets a nice value per thread (threads the job
    starts inherit it); elsewhere Qt's thread priority does the same.
    """
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, thread)
        gui = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's
        with suppress(OSError):  # a sandbox may forbid it; the job runs all the same
            os.setpriority(os.PRIO_PROCESS, thread, min(19, gui + NICENESS))
        try:
            yield
        finally:
            with suppress(OSError):  # raising it back may need privileges: the thread stays low
                os.setpriority(os.PRIO_PROCESS, thread, before)
    else:
        thread = QThread.currentThread()
        before = thread.priority()
        thread.setPriority(QThread.Priority.LowPriority)
        try:
            yield
        finally:
            inherited = before == QThread.Priority.InheritPriority  # not a value to set
            thread.setPriority(QThread.Priority.NormalPriority if inherited else before)


def start_job(func: Callable[..., Generator], *args, connect: dict, **kwargs) -> JobWorker:
    """Start ``func(*args, **kwargs)`` in a `JobWorker` with signal handlers connected.

    Parameters
    ----------
    func : callable
        A core generator function such as `napari_unet.training.train.train`.
    *args, **kwargs
        Its arguments: arrays and a frozen config, never layers or widgets.
    connect : dict
        ``{signal name: handler}``; handlers run on the main thread.

    Returns
    -------
    worker : JobWorker
        Already started; ``worker.quit()`` stops it after the job's next yield.
    """
    reserve_gui_core()  # napari's event loop keeps a core while jobs train or predict
    worker = create_worker(func, *args, _worker_class=JobWorker, _connect=connect,
                           _start_thread=False, **kwargs)
    _freeze_old_objects(worker)
    worker.start()
    return worker


_running_jobs = 0


def _freeze_old_objects(worker: JobWorker) -> None:
    """Keep the garbage collector's full passes short until the last running job ends.

    A full pass of Python's cyclic collector walks every container object in the
    process, about 540,000 in a napari viewer: 230-300 ms holding the GIL, on whichever
    thread's allocation triggers it. While a job ran, one came every few validations
    and froze the GUI that long (benchmarks/bench_responsiveness.py). `gc.freeze` moves
    the objects alive now out of the collector's sight, so a pass walks only what was
    made since; reference counting still frees everything as before. When no job runs
    any more, `gc.unfreeze` hands the old objects back to the collector.
    """
    global _running_jobs
    gc.freeze()
    _running_jobs += 1
    worker.finished.connect(_unfreeze_after_last_job)


def _unfreeze_after_last_job() -> None:
    global _running_jobs
    _running_jobs -= 1
    if _running_jobs == 0:
        gc.unfreeze()
