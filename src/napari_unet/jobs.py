"""Helpers for long jobs written as generators (training, LR search, prediction)."""

from collections.abc import Generator


def drain(generator: Generator):
    """Run a progress generator to the end and return its result (for scripts)."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value
