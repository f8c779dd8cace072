"""What a training run builds before its first step, and one optimizer update.

`build_setup` checks the data and builds the network, the normalisation, the
weight maps and the sample source (a `Setup`); `make_loader`,
`make_optimizer` and `cosine_lr` give the batches, the optimizer and the
learning rate; `update` is one optimizer update over ``accumulate`` batches
(`loss_of_batch` each, the terms of its loss from `forward_terms`). The
training loop, the learning-rate sweep and data-parallel training
(`napari_unet.training.distributed`) are all made of these.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from napari_unet.checks import check_slice_side
from napari_unet.config import Config
from napari_unet.devices import autocast_dtype, default_workers, pick_device
from napari_unet.model.files import ModelFile, make_model
from napari_unet.model.normalization import Normalization
from napari_unet.prediction.tiles import TilePlan
from napari_unet.training.loss import loss_terms
from napari_unet.training.progress import HIGHER_IS_BETTER, TrainingError
from napari_unet.training.samples import (
    TrainingSamples,
    WeightCache,
    prepare,
    split_slices,
)


@dataclass
class Setup:
    """Everything a run builds from the data and the config before its first step."""

    config: Config
    device: torch.device
    amp: torch.dtype | None
    model: torch.nn.Module
    normalization: Normalization
    unit_image: np.ndarray
    labels: np.ndarray
    train_slices: list[int]
    val_slices: list[int]
    weights: dict[int, np.ndarray]
    samples: TrainingSamples
    threshold: float | None = None
    """Membrane threshold of the model the run started from (kept without validation)."""


def build_setup(image, labels, config: Config, *, init: ModelFile | None = None) -> Setup:
    """Check the data and build the network, normalisation, weight maps and sample source.

    Parameters
    ----------
    image : (Y, X) or (Z, Y, X) ndarray
    labels : ndarray
        Annotation or ISBI labels of the image's shape.
    config : Config
    init : ModelFile, optional
        Start from these weights (fine-tuning); its network and normalisation are kept.

    Returns
    -------
    setup : Setup
    """
    image, labels = prepare(image, labels)
    t = config.train
    device = pick_device(t.device)
    torch.manual_seed(t.seed)
    model = make_model(config)
    plan = TilePlan.for_training(model, t.tile)
    check_slice_side(image.shape, to="train on")
    normalization = init.normalization if init else Normalization.of(image)
    if init:
        model.load_state_dict(init.state_dict)
    train_slices, val_slices = split_slices(labels, t.val_slices)
    cache = WeightCache(config.weights)
    weights = {z: cache.get(z, labels[z]) for z in train_slices + val_slices}
    unit_image = normalization.unit(image)
    length = t.samples_per_epoch or _tiles_to_cover(image.shape[1:], plan.output,
                                                    len(train_slices))
    samples = TrainingSamples(unit_image, labels, weights, train_slices, plan, normalization,
                              config.augment, t.seed, length)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return Setup(config, device, autocast_dtype(device, t.precision), model, normalization,
                 unit_image, labels, train_slices, val_slices, weights, samples,
                 _kept_threshold(config, init))


def _kept_threshold(config: Config, init: ModelFile | None) -> float | None:
    """Return the threshold a run without validation exports with (config's, else init's)."""
    if config.train.threshold is not None:
        return config.train.threshold
    if init and any(r.get("threshold") is not None for r in init.history):
        return init.threshold
    return None


def _tiles_to_cover(shape, tile: int, slices: int) -> int:
    return slices * math.ceil(shape[0] / tile) * math.ceil(shape[1] / tile)


def make_loader(setup: Setup, start: int, generator: torch.Generator, *,
                batches: list[list[int]] | None = None, processes: int = 1) -> DataLoader:
    """DataLoader over samples ``start ..`` of the current epoch, in order.

    ``batches``, lists of sample indices, replace that order (one process's
    shares of a data-parallel run's batches); ``processes`` loading side by
    side on this machine share its cores.
    """
    t = setup.config.train
    workers = (default_workers(setup.device, processes=processes) if t.num_workers is None
               else t.num_workers)
    batching = ({"batch_sampler": batches} if batches is not None else
                {"batch_size": t.batch_size, "sampler": range(start, len(setup.samples))})
    return DataLoader(
        setup.samples,
        **batching,
        num_workers=workers,
        pin_memory=setup.device.type == "cuda",
        # spawn: forking a process that runs Qt (napari) or CUDA is unsafe.
        multiprocessing_context="spawn" if workers else None,
        persistent_workers=False,
        # Its own generator, so building a loader never draws from the global RNG
        # (that would make a resumed run's dropout differ from an uninterrupted one).
        generator=generator,
    )


def make_optimizer(model, config: Config):
    """Optimizer and learning-rate schedule of a config (a cosine is set by `cosine_lr`)."""
    t = config.train
    if t.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum,
                                    weight_decay=t.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    if t.schedule == "plateau":
        mode = "max" if HIGHER_IS_BETTER[t.monitor] else "min"
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, patience=3)
    else:
        scheduler = None
    return optimizer, scheduler


def cosine_lr(lr: float, progress: float) -> float:
    """Return the cosine schedule's rate ``progress`` (0 to 1) of the way through a run."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def run_progress(step: int, total_steps: int, elapsed: float, minutes: float | None) -> float:
    """Return how far a run is (0 to 1): by its steps, or by its time budget if that ends first."""
    by_steps = step / max(1, total_steps)
    return by_steps if minutes is None else max(by_steps, elapsed / (60.0 * minutes))


def forward_terms(setup: Setup, batch: dict,
                  network: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one batch; return the sum and the pixel count of its loss (`loss_terms`).

    ``network`` runs the forward pass instead of ``setup.model`` (its
    data-parallel wrapper).
    """
    device = setup.device
    image = batch["image"].to(device, non_blocking=True)
    if device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=setup.amp, enabled=setup.amp is not None):
        logits = (setup.model if network is None else network)(image)
    return loss_terms(logits, batch["target"].to(device, non_blocking=True),
                      batch["weights"].to(device, non_blocking=True))


def loss_of_batch(setup: Setup, batch: dict) -> torch.Tensor:
    """Forward one batch and return its weighted loss (eq. 1)."""
    total, annotated = forward_terms(setup, batch)
    return total / annotated.clamp(min=1)


def out_of_memory(setup: Setup) -> TrainingError:
    """Return the error that says which sizes to shrink when the GPU runs out of memory."""
    return TrainingError(
        f"out of GPU memory at tile {setup.samples.plan.input} px, batch "
        f"{setup.config.train.batch_size}: try a smaller tile or batch size"
    )


def update(setup: Setup, optimizer, batches) -> tuple[float, int]:
    """One optimizer update over ``accumulate`` batches; return its mean loss and tile count.

    A non-finite loss is returned without updating the weights.
    """
    t = setup.config.train
    optimizer.zero_grad(set_to_none=True)
    total, tiles, parts = 0.0, 0, 0
    for _ in range(t.accumulate):
        batch = next(batches, None)
        if batch is None:
            break
        try:
            loss = loss_of_batch(setup, batch)
        except torch.cuda.OutOfMemoryError:
            raise out_of_memory(setup) from None
        if not torch.isfinite(loss):
            return loss.item(), tiles
        (loss / t.accumulate).backward()
        total += loss.item()
        tiles += len(batch["image"])
        parts += 1
    optimizer.step()
    return total / max(1, parts), tiles
