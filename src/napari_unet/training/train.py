"""The training loop: one generator that the command line and the napari widget both drive.

`train` yields a small `Progress` record after every optimizer update and
validation, and returns a `TrainResult`. Closing the generator (or Ctrl-C)
saves the last model, so a stopped run resumes exactly where it stopped:
samples are drawn from ``(seed, epoch, index)`` and the optimizer, scheduler
and RNG states travel in the model file.
"""

import copy
import dataclasses
import enum
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from napari_unet.checks import check_slice_side
from napari_unet.config import Config
from napari_unet.devices import autocast_dtype, default_workers, pick_device, using_cpu_threads
from napari_unet.errors import InputError
from napari_unet.evaluation.scores import evaluate, evaluate_thresholds
from napari_unet.jobs import drain
from napari_unet.model.files import ModelFile, load_model, make_model, save_model
from napari_unet.model.normalization import Normalization
from napari_unet.prediction.postprocess import is_membrane
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.prediction.tiles import TilePlan
from napari_unet.training.loss import probability_loss, weighted_cross_entropy
from napari_unet.training.samples import (
    TileGeometry,
    TrainingSamples,
    WeightCache,
    class_targets,
    prepare,
    split_slices,
)

__all__ = ["Event", "Progress", "TrainResult", "TrainingError", "describe_start", "drain",
           "train"]

HIGHER_IS_BETTER = {"v_rand": True, "v_info": True, "pixel_error": False, "val_loss": False,
                    "train_loss": False}


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
        ``threads``). VALIDATION: the validation record (epoch, step, train_loss,
        val_loss, pixel_error, v_rand, v_info, threshold, lr, seconds).
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
    train, val = info["train_slices"], info["val_slices"]
    return (f"training on {len(train)} slices ({format_slices(train)}), validating on "
            f"{format_slices(val)}; device {device}")


def last_path_for(path: str | Path) -> Path:
    """Return the sibling file that holds the last model: ``model.pt`` -> ``model.last.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.last{path.suffix}")


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
    geometry = TileGeometry.for_network(plan.output, plan.input)
    check_slice_side(image.shape, to="train on")
    normalization = init.normalization if init else Normalization.of(image)
    if init:
        model.load_state_dict(init.state_dict)
    train_slices, val_slices = split_slices(labels, t.val_slices)
    cache = WeightCache(config.weights)
    weights = {z: cache.get(z, labels[z]) for z in train_slices + val_slices}
    unit_image = normalization.unit(image)
    length = t.samples_per_epoch or _tiles_to_cover(image.shape[1:], geometry.tile,
                                                    len(train_slices))
    samples = TrainingSamples(unit_image, labels, weights, train_slices, geometry, normalization,
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


def make_loader(setup: Setup, start: int, generator: torch.Generator) -> DataLoader:
    """DataLoader over samples ``start ..`` of the current epoch, in order."""
    t = setup.config.train
    workers = default_workers(setup.device) if t.num_workers is None else t.num_workers
    return DataLoader(
        setup.samples,
        batch_size=t.batch_size,
        sampler=range(start, len(setup.samples)),
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


def loss_of_batch(setup: Setup, batch: dict) -> torch.Tensor:
    """Forward one batch and return its weighted loss."""
    device = setup.device
    image = batch["image"].to(device, non_blocking=True)
    if device.type == "cuda":
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=setup.amp, enabled=setup.amp is not None):
        logits = setup.model(image)
    return weighted_cross_entropy(logits, batch["target"].to(device, non_blocking=True),
                                  batch["weights"].to(device, non_blocking=True))


THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Membrane thresholds tried at validation (the challenge's sweep without 0 and 1)."""


def pick_threshold(per_threshold: list[dict]) -> dict:
    """Return the scores of the threshold a mask is exported with.

    The one with the best mean of V_rand and pixel accuracy (1 - pixel error),
    the closest to 0.5 on a tie. V_rand alone prefers thick membranes (a thick
    line never has a gap), pixel error alone thin ones with gaps; a weighted
    loss shifts the probabilities towards membrane, so 0.5 is not always right.

    Parameters
    ----------
    per_threshold : list of dict
        `napari_unet.evaluation.scores.evaluate_thresholds`'s ``per_threshold``.

    Returns
    -------
    scores : dict
        One of them (with its ``threshold``).
    """
    def key(scores):
        v_rand = scores["v_rand"] if scores["v_rand"] is not None else 0.0
        return (v_rand + 1.0 - scores["pixel_error"], -abs(scores["threshold"] - 0.5))
    return max(per_threshold, key=key)


def validate(setup: Setup) -> tuple[dict, np.ndarray | None]:
    """Predict the validation slices; return their loss and ISBI scores, and one prediction.

    ``pixel_error``, ``v_rand`` and ``v_info`` are those of the mask exported
    at ``threshold`` (the config's ``train.threshold``, or `pick_threshold`'s);
    (gaps closed when ``train.close_gaps`` says so);
    ``v_rand_max`` and ``v_info_max`` are the challenge's best over `THRESHOLDS`; ``sweep`` lists
    ``[threshold, v_rand, v_info, pixel_error]`` for each of them. Without
    validation slices a run exports at the config's threshold, or else keeps the
    threshold of the model it started from.
    """
    if not setup.val_slices:
        return ({} if setup.threshold is None else {"threshold": setup.threshold}), None
    t, z = setup.config.train, setup.val_slices
    probs = predict_probabilities(setup.model, setup.unit_image[z], setup.normalization,
                                  tile=t.tile, batch_size=max(1, t.batch_size),
                                  device=setup.device, autocast_dtype=setup.amp)
    labels, weights = setup.labels[z], np.stack([setup.weights[i] for i in z])
    record = {"val_loss": probability_loss(probs, class_targets(labels), weights)}
    fixed = t.threshold
    sweep = evaluate_thresholds(probs, labels,
                                sorted({*THRESHOLDS, *([] if fixed is None else [fixed])}))
    chosen = (pick_threshold(sweep["per_threshold"]) if fixed is None
              else next(s for s in sweep["per_threshold"] if s["threshold"] == fixed))
    if t.close_gaps is not None:
        mask = is_membrane(probs, threshold=chosen["threshold"], close_gaps=t.close_gaps)
        chosen = {**evaluate(mask, labels), "threshold": chosen["threshold"]}
    record.update({k: chosen[k] for k in ("pixel_error", "v_rand", "v_info", "threshold")},
                  v_rand_max=sweep["v_rand_max"], v_info_max=sweep["v_info_max"],
                  sweep=[[s["threshold"], s["v_rand"], s["v_info"], s["pixel_error"]]
                         for s in sweep["per_threshold"]])
    return record, probs[0]


@dataclass
class _State:
    """Where a run stands; saved in the model file for an exact resume."""

    epoch: int = 0
    position: int = 0
    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_updates: int = 0
    best_score: float | None = None
    bad_validations: int = 0
    history: list = field(default_factory=list)


class _Run:
    """The mutable parts of one training run, with saving and early stopping."""

    def __init__(self, setup: Setup, output: Path | None, state: _State):
        self.setup, self.output, self.state = setup, output, state
        t = setup.config.train
        self.steps_per_epoch = math.ceil(len(setup.samples) / (t.batch_size * t.accumulate))
        self.total_steps = self.steps_per_epoch * t.epochs
        self.optimizer, self.scheduler = make_optimizer(setup.model, setup.config)
        self.best: ModelFile = self.model_file(with_state=False)
        self.last_save = time.monotonic()
        self.monitor = t.monitor if setup.val_slices else "train_loss"

    def model_file(self, *, with_state: bool) -> ModelFile:
        s = self.setup
        training_state = {}
        if with_state:
            st = dataclasses.asdict(self.state)
            training_state = {
                **st,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "torch_rng": torch.get_rng_state(),
            }
        state_dict = copy.deepcopy({k: v.detach().cpu() for k, v in s.model.state_dict().items()})
        return ModelFile(s.config, s.normalization, state_dict, list(self.state.history),
                         training_state)

    def restore(self, training_state: dict) -> None:
        names = {f.name for f in dataclasses.fields(_State)}
        self.state = _State(**{k: v for k, v in training_state.items() if k in names})
        self.optimizer.load_state_dict(training_state["optimizer"])
        if self.scheduler and training_state.get("scheduler"):
            self.scheduler.load_state_dict(training_state["scheduler"])
        torch.set_rng_state(training_state["torch_rng"])

    def save_last(self) -> None:
        if self.output:
            save_model(last_path_for(self.output), self.model_file(with_state=True))
        self.last_save = time.monotonic()

    def record_validation(self, record: dict) -> bool:
        """Keep the model if it is the best so far; return True when patience runs out."""
        score = record[self.monitor]
        st = self.state
        higher = HIGHER_IS_BETTER[self.monitor]
        better = score is not None and (
            st.best_score is None or (score > st.best_score if higher else score < st.best_score)
        )
        if better:
            st.best_score, st.bad_validations = score, 0
            self.best = self.model_file(with_state=False)
            if self.output:
                save_model(self.output, self.best)
        else:
            st.bad_validations += 1
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and score:
            self.scheduler.step(score)
        patience = self.setup.config.train.patience
        return patience is not None and st.bad_validations > patience


def train(
    image: np.ndarray,
    labels: np.ndarray,
    config: Config | None = None,
    *,
    output: str | Path | None = None,
    init: str | Path | None = None,
    resume: str | Path | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a U-Net, yielding progress; return the best and the last model.

    Parameters
    ----------
    image : (Y, X) or (Z, Y, X) ndarray
        The EM image, any numeric dtype.
    labels : ndarray
        Annotation labels (0 = not annotated, 1 = membrane, 2 = interior) or ISBI
        labels of the image's shape; partial annotation is fine.
    config : Config, optional
        Defaults to the paper's settings.
    output : str or Path, optional
        Model file for the best model; the last goes to its ``.last`` sibling
        (`last_path_for`), saved every ``checkpoint_minutes`` and at the end.
    init : str or Path, optional
        Model file to start from (fine-tuning on new or corrected labels); its
        network and normalisation are kept, the training settings are ``config``'s.
    resume : str or Path, optional
        A last-model file to continue exactly: its configuration is used, except
        ``epochs`` and ``minutes``, which come from ``config``.

    Yields
    ------
    progress : Progress
        After every optimizer update (STEP) and every validation (VALIDATION).

    Returns
    -------
    result : TrainResult

    Raises
    ------
    InputError
        For bad data or settings.
    TrainingError
        When the loss stops being finite or memory runs out; the best model
        saved so far stays on disk.
    """
    config = config or Config()
    resumed = load_model(resume) if resume else None
    if resumed:
        if not resumed.training_state:
            raise InputError(f"{resume}: holds no training state to resume; use init instead")
        config = resumed.config.replace(train={"epochs": config.train.epochs,
                                               "minutes": config.train.minutes})
    initial = load_model(init) if init else None
    if initial:
        config = dataclasses.replace(config, model=initial.config.model)
    setup = build_setup(image, labels, config, init=resumed or initial)
    run = _Run(setup, Path(output) if output else None, _State())
    if resumed:
        run.restore(resumed.training_state)
    with using_cpu_threads(setup.device):
        try:
            reason = yield from _loop(run)
        except (GeneratorExit, KeyboardInterrupt):
            run.save_last()
            raise
    run.save_last()
    last = run.model_file(with_state=True)
    return TrainResult(run.best, last, run.output, last_path_for(run.output) if run.output
                       else None, reason, list(run.state.history))


def _loop(run: _Run) -> Generator[Progress, None, str]:
    setup, st, t = run.setup, run.state, run.setup.config.train
    yield Progress(Event.START, st.epoch, t.epochs, st.step, run.total_steps, math.nan,
                   run.optimizer.param_groups[0]["lr"], 0.0, None, metrics={
                       "train_slices": list(setup.train_slices),
                       "val_slices": list(setup.val_slices), "device": str(setup.device),
                       "threads": torch.get_num_threads()})
    start_time, start_step = time.monotonic(), st.step
    generator = torch.Generator().manual_seed(t.seed)
    rate, reason = 0.0, "epochs"
    while st.epoch < t.epochs and reason == "epochs":
        setup.samples.epoch = st.epoch
        setup.model.train()
        batches = iter(make_loader(setup, st.position, generator))
        while st.position < len(setup.samples) and reason == "epochs":
            tic = time.monotonic()
            loss, tiles = update(setup, run.optimizer, batches)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss} at step {st.step + 1}: lower the learning rate "
                    f"(now {t.lr}); the best model so far is kept ({run.output or 'in memory'})"
                )
            if t.schedule == "cosine":
                progress = run_progress(st.step + 1, run.total_steps,
                                        time.monotonic() - start_time, t.minutes)
                for group in run.optimizer.param_groups:
                    group["lr"] = cosine_lr(t.lr, progress)
            st.position += tiles
            st.step += 1
            st.epoch_loss_sum += loss
            st.epoch_updates += 1
            rate = tiles / max(time.monotonic() - tic, 1e-9) if rate == 0 else \
                0.9 * rate + 0.1 * tiles / max(time.monotonic() - tic, 1e-9)
            eta = _eta(run, start_time, start_step)
            yield Progress(Event.STEP, st.epoch, t.epochs, st.step, run.total_steps, loss,
                           run.optimizer.param_groups[0]["lr"], rate, eta)
            if t.minutes is not None and time.monotonic() - start_time >= 60 * t.minutes:
                reason = "time budget"  # validate once more, so the best model is on disk
            elif time.monotonic() - run.last_save >= 60 * t.checkpoint_minutes:
                run.save_last()
        train_loss = st.epoch_loss_sum / max(1, st.epoch_updates)
        if reason == "epochs":  # a whole epoch is done
            st.epoch, st.position, st.epoch_loss_sum, st.epoch_updates = st.epoch + 1, 0, 0.0, 0
            if st.epoch % t.val_every and st.epoch < t.epochs:
                continue
        record, preview = validate(setup)
        record = {"epoch": st.epoch, "step": st.step, "train_loss": train_loss, **record,
                  "lr": run.optimizer.param_groups[0]["lr"],
                  "seconds": time.monotonic() - start_time}
        st.history.append(record)
        stop = run.record_validation(record)
        yield Progress(Event.VALIDATION, st.epoch, t.epochs, st.step, run.total_steps,
                       train_loss, record["lr"], rate, _eta(run, start_time, start_step),
                       metrics=record, preview=preview,
                       preview_slice=setup.val_slices[0] if setup.val_slices else None)
        if stop:
            return "early stopping"
    return reason


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
            raise TrainingError(
                f"out of GPU memory at tile {setup.samples.geometry.input} px, batch "
                f"{t.batch_size}: try a smaller tile or batch size"
            ) from None
        if not torch.isfinite(loss):
            return loss.item(), tiles
        (loss / t.accumulate).backward()
        total += loss.item()
        tiles += len(batch["image"])
        parts += 1
    optimizer.step()
    return total / max(1, parts), tiles


def _eta(run: _Run, start_time: float, start_step: int) -> float | None:
    done = run.state.step - start_step
    if done == 0:
        return None
    elapsed = time.monotonic() - start_time
    eta = elapsed / done * (run.total_steps - run.state.step)
    minutes = run.setup.config.train.minutes
    return min(eta, max(0.0, 60 * minutes - elapsed)) if minutes is not None else eta

