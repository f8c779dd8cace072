"""Helpers for long jobs written as generators (training, LR search, prediction)."""

from collections.abc import Callable, Generator


def drain(generator: Generator, report: Callable | None = None):
    """Run a progress generator to the end and return its result.

    Scripts, the command line and the tests drive every long job through this;
    the napari widgets drive the same generators in a worker thread instead.

    Parameters
    ----------
    generator : Generator
        A long job: it yields progress records and returns its result.
    report : callable, optional
        Called with every record (a progress bar's update, say); None drops them.

    Returns
    -------
    result
        What the generator returned.
    """
    while True:
        try:
            progress = next(generator)
        except StopIteration as stop:
            return stop.value
        if report is not None:
            report(progress)


def format_duration(seconds: float | None) -> str:
    """Format seconds as ``h:mm:ss`` (``?`` when unknown)."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


class Smoother:
    """Exponential moving average with bias correction, for a noisy loss curve.

    The average starts at 0 and is divided by ``1 - beta**n`` after ``n``
    values, so the first values are not pulled towards 0.

    Parameters
    ----------
    beta : float
        Weight of the past.
    """

    def __init__(self, beta: float = 0.9):
        self.beta, self.average, self.count = beta, 0.0, 0

    def add(self, value: float) -> float:
        """Take one value; return the smoothed value so far."""
        self.average = self.beta * self.average + (1 - self.beta) * value
        self.count += 1
        return self.average / (1 - self.beta**self.count)
