"""Run a core progress generator (training, LR search, prediction) in a napari worker."""

from collections.abc import Callable, Generator

from napari.qt.threading import GeneratorWorker, create_worker


class JobFailed(Exception):
    """A job raised a RuntimeError; the original is the ``__cause__``."""


def _relay(job: Generator):
    """Yield the job's records and return its result, re-raising RuntimeErrors as JobFailed.

    superqt takes a RuntimeError from a worker for a deleted Qt object and then emits
    neither ``errored`` nor ``finished``; `napari_unet.train.TrainingError` is one.
    """
    try:
        return (yield from job)
    except RuntimeError as err:
        raise JobFailed(str(err)) from err


class JobWorker(GeneratorWorker):
    """A generator worker that closes its job on the worker thread when it ends or is quit.

    superqt's worker leaves a quit generator suspended, to be closed whenever it is garbage
    collected, on any thread. Closing it here, before ``finished`` is emitted, lets the job
    clean up in order: `napari_unet.train.train` saves the last model when closed.

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
        """Drive the job; close it on this thread whatever happens."""
        try:
            return super().work()
        finally:
            self._job.close()


def start_job(func: Callable[..., Generator], *args, connect: dict, **kwargs) -> JobWorker:
    """Start ``func(*args, **kwargs)`` in a `JobWorker` with signal handlers connected.

    Parameters
    ----------
    func : callable
        A core generator function such as `napari_unet.train.train`.
    *args, **kwargs
        Its arguments: arrays and a frozen config, never layers or widgets.
    connect : dict
        ``{signal name: handler}``; handlers run on the main thread.

    Returns
    -------
    worker : JobWorker
        Already started; ``worker.quit()`` stops it after the job's next yield.
    """
    return create_worker(func, *args, _worker_class=JobWorker, _connect=connect,
                         _start_thread=True, **kwargs)
