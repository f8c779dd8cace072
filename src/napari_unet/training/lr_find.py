"""Learning-rate range test (Smith 2017): an exponential sweep of the learning rate.

The rate grows geometrically from ``start`` to ``end``, one optimizer update
per rate, on augmented training samples; the loss is smoothed with an
exponential moving average (bias-corrected) and the sweep stops once the
smoothed loss exceeds ``diverge`` times its minimum. The rate recorded with a
loss is the one that update used.
"""

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from napari_unet.config import Config
from napari_unet.devices import using_cpu_threads
from napari_unet.jobs import Smoother
from napari_unet.training.setup import build_setup, make_loader, make_optimizer, update


@dataclass(frozen=True)
class LRStep:
    """One point of the sweep: the rate an update used and the loss it saw."""

    step: int
    steps: int
    lr: float
    loss: float
    smoothed: float


@dataclass(frozen=True)
class LRResult:
    """The sweep's curve and the suggested learning rate.

    Attributes
    ----------
    lrs, losses, smoothed : list of float
        One entry per update, in order.
    suggestion : float or None
        The rate where the smoothed loss falls fastest (per log-rate) once it has
        started to fall, before its minimum (`suggest_lr`); None when it does not fall.
    diverged : bool
        Whether the sweep stopped on divergence.
    """

    lrs: list
    losses: list
    smoothed: list
    suggestion: float | None
    diverged: bool


WARMUP = 0.1
"""Fraction of the sweep's first points left out of the suggestion: the moving average
is still settling there and its slope is noise."""

ONSET = 0.1
"""The loss "starts to fall" once it is this fraction of its whole drop below its level
after the warm-up; the flat, noisy start before that is left out of the suggestion."""


def suggest_lr(lrs, smoothed) -> float | None:
    """Return the rate of steepest descent of the smoothed loss, once it starts to fall.

    The first `WARMUP` of the points are skipped; of the rest, the suggestion is
    taken between the point after which the loss stays `ONSET` of its whole drop
    below its starting level and the loss's minimum, where the slope (per
    log-rate, averaged over three neighbouring points) is steepest. A flat noisy
    start, where a single noisy step can look steep, is never suggested.

    Parameters
    ----------
    lrs, smoothed : sequence of float
        The sweep's rates and its smoothed losses.

    Returns
    -------
    lr : float or None
        None when the loss does not fall after the warm-up.
    """
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    skip = int(WARMUP * len(lrs))
    finite = np.isfinite(smoothed)
    if not finite[skip:].any():
        return None
    skip += int(np.argmax(finite[skip:]))  # the first finite point after the warm-up
    stop = skip + int(np.nanargmin(np.where(finite[skip:], smoothed[skip:], np.nan)))
    drop = smoothed[skip] - smoothed[stop]
    if stop - skip < 2 or drop <= 0:
        return None
    # The last point still above the onset level: from there on the loss falls for good.
    above = np.nonzero(smoothed[skip:stop + 1] > smoothed[skip] - ONSET * drop)[0]
    begin = skip + int(above[-1])
    onset = begin + 1
    if stop - begin < 2:
        return float(lrs[onset])
    slopes = np.gradient(smoothed[begin:stop + 1], np.log(lrs[begin:stop + 1]))
    slopes = np.convolve(np.pad(slopes, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    return float(lrs[onset + int(np.argmin(slopes[1:]))])  # never a point above the onset


def lr_find(
    image: np.ndarray,
    labels: np.ndarray,
    config: Config | None = None,
    *,
    start: float = 1e-6,
    end: float = 10.0,
    steps: int = 100,
    beta: float = 0.9,
    diverge: float = 4.0,
) -> Generator[LRStep, None, LRResult]:
    """Sweep the learning rate exponentially; yield each point, return the curve.

    Parameters
    ----------
    image, labels : ndarray
        As for `napari_unet.training.train.train`.
    config : Config, optional
        Network, optimizer and data settings; its learning rate is ignored.
    start, end : float
        First and last learning rate.
    steps : int
        Number of updates (rates).
    beta : float
        Smoothing of the loss (exponential moving average).
    diverge : float
        Stop when the smoothed loss exceeds this multiple of its minimum.

    Yields
    ------
    point : LRStep

    Returns
    -------
    result : LRResult
    """
    config = (config or Config()).replace(train={"lr": start, "schedule": "none",
                                                 "samples_per_epoch": None})
    setup = build_setup(image, labels, config)
    t = config.train
    setup.samples.length = steps * t.batch_size * t.accumulate
    optimizer, _ = make_optimizer(setup.model, config)
    factor = (end / start) ** (1 / max(1, steps - 1))
    batches = iter(make_loader(setup, 0, torch.Generator().manual_seed(t.seed)))
    setup.model.train()
    with using_cpu_threads(setup.device):
        return (yield from _sweep(setup, optimizer, batches, start, factor, steps, beta, diverge))


def _sweep(setup, optimizer, batches, start, factor, steps, beta, diverge):
    lrs, losses, smoothed, smoother, best = [], [], [], Smoother(beta), np.inf
    for step in range(steps):
        lr = start * factor**step
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, _ = update(setup, optimizer, batches)
        value = smoother.add(loss)
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(value)
        yield LRStep(step + 1, steps, lr, loss, value)
        best = min(best, value)
        if not np.isfinite(value) or value > diverge * best:
            return LRResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed), True)
    return LRResult(lrs, losses, smoothed, suggest_lr(lrs, smoothed), False)

