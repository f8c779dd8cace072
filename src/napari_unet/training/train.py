"""The training loop: one generator that the command line and the napari widget both drive.

`train` yields a small `Progress` record after every optimizer update and
validation, and returns a `TrainResult`. Closing the generator (or Ctrl-C)
saves the last model, so a stopped run resumes exactly where it stopped:
samples are drawn from ``(seed, epoch, index)`` and the optimizer, scheduler
and RNG states travel in the model file.

The records are `napari_unet.training.progress`'s, the setup and the optimizer
update `napari_unet.training.setup`'s, the validation pass
`napari_unet.training.validation`'s. What changes when torchrun's processes
train together (their shares of each batch, the update, the decisions they
take together) is asked of a world (`napari_unet.training.distributed`).
"""

import copy
import dataclasses
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from napari_unet.config import Config
from napari_unet.devices import using_cpu_threads
from napari_unet.errors import InputError
from napari_unet.model.files import ModelFile, load_model, save_model
from napari_unet.training.distributed import PeerLost, Solo
from napari_unet.training.progress import (
    HIGHER_IS_BETTER,
    Event,
    Progress,
    TrainingError,
    TrainResult,
)
from napari_unet.training.setup import (
    Setup,
    build_setup,
    cosine_lr,
    make_optimizer,
    run_progress,
)
from napari_unet.training.validation import validate

__all__ = ["last_path_for", "train"]


def last_path_for(path: str | Path) -> Path:
    """Return the sibling file that holds the last model: ``model.pt`` -> ``model.last.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.last{path.suffix}")

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

    def __init__(self, setup: Setup, output: Path | None, state: _State, world: Solo):
        self.setup, self.output, self.state, self.world = setup, output, state, world
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
    world: Solo | None = None,
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
    world : Solo or Group, optional
        The processes that train together (`napari_unet.training.distributed.joined`);
        one by default. Only process 0 validates, yields VALIDATION records and
        writes files.

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
    world = world or Solo()
    setup = build_setup(image, labels, config, init=resumed or initial)
    world.prepare(setup)
    run = _Run(setup, Path(output) if output and world.main else None, _State(), world)
    if resumed:
        run.restore(resumed.training_state)
    world.fork_rng(config.train.seed, run.state.step)
    with using_cpu_threads(setup.device, processes=world.local_size):
        try:
            reason = yield from _loop(run)
        except (GeneratorExit, KeyboardInterrupt, PeerLost):
            run.save_last()
            raise
    run.save_last()
    last = run.model_file(with_state=True)
    return TrainResult(run.best, last, run.output, last_path_for(run.output) if run.output
                       else None, reason, list(run.state.history))


def _loop(run: _Run) -> Generator[Progress, None, str]:
    setup, st, t, world = run.setup, run.state, run.setup.config.train, run.world
    yield Progress(Event.START, st.epoch, t.epochs, st.step, run.total_steps, math.nan,
                   run.optimizer.param_groups[0]["lr"], 0.0, None, metrics={
                       "train_slices": list(setup.train_slices),
                       "val_slices": list(setup.val_slices), "device": str(setup.device),
                       "threads": torch.get_num_threads(), **world.describe()})
    start_time, start_step = time.monotonic(), st.step
    generator = torch.Generator().manual_seed(t.seed)
    rate, reason = 0.0, "epochs"
    while st.epoch < t.epochs and reason == "epochs":
        setup.samples.epoch = st.epoch
        setup.model.train()
        batches = world.batches(setup, st.position, generator)
        while st.position < len(setup.samples) and reason == "epochs":
            tic = time.monotonic()
            loss, tiles = world.update(setup, run.optimizer, batches)
            if not math.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss} at step {st.step + 1}: lower the learning rate "
                    f"(now {t.lr}); the best model so far is kept ({run.output or 'in memory'})"
                )
            if t.schedule == "cosine":
                progress = run_progress(st.step + 1, run.total_steps,
                                        world.check(start_time)[0], t.minutes)
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
            elapsed, signalled = world.check(start_time)
            if signalled:  # Ctrl-C or SIGTERM on a process of a group: all stop here
                raise KeyboardInterrupt
            if t.minutes is not None and elapsed >= 60 * t.minutes:
                reason = "time budget"  # validate once more, so the best model is on disk
            elif time.monotonic() - run.last_save >= 60 * t.checkpoint_minutes:
                run.save_last()
        train_loss = st.epoch_loss_sum / max(1, st.epoch_updates)
        if reason == "epochs":  # a whole epoch is done
            st.epoch, st.position, st.epoch_loss_sum, st.epoch_updates = st.epoch + 1, 0, 0.0, 0
            if st.epoch % t.val_every and st.epoch < t.epochs:
                continue
        stop = False
        if world.main:
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
        if _agree(run, stop):
            return "early stopping"
    return reason


def _agree(run: _Run, stop: bool) -> bool:
    """Give every process process 0's early-stopping decision and learning rates.

    The rates change with a plateau schedule, which only process 0 steps
    (it alone validates).
    """
    groups = run.optimizer.param_groups
    decided = run.world.agree([float(stop), *(group["lr"] for group in groups)])
    for group, lr in zip(groups, decided[1:], strict=True):
        group["lr"] = lr
    return bool(decided[0])


def _eta(run: _Run, start_time: float, start_step: int) -> float | None:
    done = run.state.step - start_step
    if done == 0:
        return None
    elapsed = time.monotonic() - start_time
    eta = elapsed / done * (run.total_steps - run.state.step)
    minutes = run.setup.config.train.minutes
    return min(eta, max(0.0, 60 * minutes - elapsed)) if minutes is not None else eta

