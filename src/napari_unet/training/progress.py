"""What a training run reports: its progress records, its result, its error, and their text.

`~napari_unet.training.train.train` yields a `Progress` record at the start,
after every optimizer update and after every validation, and returns a
`TrainResult`; `TrainingError` stops it with a message that says what to do.
`HIGHER_IS_BETTER` says which way each figure a run can monitor improves, and
`describe_start` and `format_slices` put a START record into words for the
command line and the napari widgets.
"""

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_unet.model.files import ModelFile

HIGHER_IS_BETTER = {"v_rand": True, "v_info": True, "pixel_error": False, "val_loss": False,
                    "train_loss": False}
"""Which way each figure a run can monitor improves (True: higher is better)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, out of memory); the message says what to do."""


class Event(enum.Enum):
    """What a `Progress` record reports."""

    START = "start"
    STEP = "step"
    VALIDATION = "validation"


@dataclass(frozen=True)
class Progress:
    """One report from `train`.

    Attributes
    ----------
    event : Event
        START once before the first step, then STEP and VALIDATION.
    epoch : int
        Epochs completed before this one (0-based current epoch).
    epochs : int
        Planned epochs.
    step, total_steps : int
        Optimizer updates done and planned.
    loss : float
        Training loss of the last update (STEP) or the epoch's mean (VALIDATION).
    lr : float
        Learning rate used by the last update.
    samples_per_s : float
        Training throughput (tiles per second, smoothed).
    eta_s : float or None
        Seconds left, by the epoch count or the time budget, whichever ends first.
    metrics : dict or None
        START: what the run trains on (``train_slices``, ``val_slices``, ``device``,
        ``threads``; ``processes`` when several train together). VALIDATION: the
        validation record (epoch, step, train_loss, val_loss, pixel_error, v_rand,
        v_info, threshold, lr, seconds).
    preview : (Y, X) float32 ndarray or None
        P(membrane) on the first validation slice (VALIDATION only).
    preview_slice : int or None
        Index of that slice in the stack.
    """

    event: Event
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    lr: float
    samples_per_s: float
    eta_s: float | None
    metrics: dict | None = None
    preview: np.ndarray | None = field(default=None, repr=False, compare=False)
    preview_slice: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run leaves.

    Attributes
    ----------
    best, last : ModelFile
        The best model by the monitored figure, and the model as it ended.
    best_path, last_path : Path or None
        Where they were saved (None without an output path).
    reason : str
        Why training ended: 'epochs', 'early stopping', 'time budget' or 'stopped'.
    history : list of dict
        One record per validation.
    """

    best: ModelFile
    last: ModelFile
    best_path: Path | None
    last_path: Path | None
    reason: str
    history: list


def format_slices(slices: list[int]) -> str:
    """Write slice indices compactly: ``[0, 1, 2, 3, 7]`` -> ``'0-3, 7'`` (``'none'`` if empty)."""
    runs: list[list[int]] = []
    for z in sorted(slices):
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


def describe_start(info: dict) -> str:
    """Say, in one line, what a run trains and validates on and where (a START record)."""
    device = info["device"]
    if device == "cpu":
        device += f" ({info['threads']} thread{'s' if info['threads'] > 1 else ''})"
    if "processes" in info:
        device += f", {info['processes']} processes"
    train, val = info["train_slices"], info["val_slices"]
    return (f"training on {len(train)} slices ({format_slices(train)}), validating on "
            f"{format_slices(val)}; device {device}")

