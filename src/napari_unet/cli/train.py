"""The command line's training jobs: ``train`` and ``lr-find``.

Each job reads its files, builds a `Config` (defaults, then ``--config FILE``,
then flags), and drains the same generator the napari widgets drive, with a
terminal progress bar.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

from napari_unet.cli.common import (
    add_config_flags,
    config_from_args,
    describe_config,
    fit_tile,
    progress_bar,
    read_pair,
)
from napari_unet.errors import InputError
from napari_unet.jobs import format_duration


def _format(record: dict, *, final: bool = False) -> str:
    """One validation line; ``final``: the closing one after the time budget, mid-epoch."""
    keys = ("train_loss", "val_loss", "pixel_error", "v_rand", "v_info")
    shown = ", ".join(f"{k} {record[k]:.4f}" for k in keys if record.get(k) is not None)
    if final:
        return f"final validation (time budget, step {record['step']}): {shown}"
    return f"epoch {record['epoch']}: {shown}"


class TrainBar:
    """The terminal view of a training run: what it trains on, then a bar to the end.

    With a time budget the bar counts its seconds (the budget is what ends such a
    run, not the planned epochs); otherwise it counts optimizer steps.
    """

    def __init__(self, minutes: float | None):
        self.minutes, self.bar, self.started = minutes, None, 0.0
        self.epoch = None  # of the last step: a validation in the same epoch closes the run

    def show(self, progress) -> None:
        """Show one `Progress` record: the start line, a validation line, or the bar."""
        from napari_unet.training.progress import Event, describe_start

        if progress.event is Event.START:
            print(describe_start(progress.metrics), flush=True)
            self.started = time.monotonic()
            if self.minutes is not None:
                self.bar = progress_bar(round(60 * self.minutes), "s")
            else:
                self.bar = progress_bar(progress.total_steps, "step")
                self.bar.update(progress.step)
            return
        if progress.event is Event.VALIDATION:
            # A whole epoch's validation counts it; the time budget's comes mid-epoch.
            self.bar.write(_format(progress.metrics, final=progress.epoch == self.epoch))
            return
        self.epoch = progress.epoch
        done = (min(time.monotonic() - self.started, 60 * self.minutes)
                if self.minutes is not None else progress.step)
        self.bar.update(round(done) - self.bar.n)
        self.bar.set_postfix(epoch=progress.epoch + 1, step=progress.step,
                             loss=f"{progress.loss:.4f}", tiles_s=f"{progress.samples_per_s:.2f}",
                             left=format_duration(progress.eta_s))

    def close(self) -> None:
        """Close the bar (if it is open)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: train and save the best and the last model.

    Under torchrun (``torchrun -m napari_unet train``) each process runs this
    and they train together; ``--nproc N`` starts torchrun's launcher first
    (`napari_unet.cli.launch`).
    """
    from napari_unet.cli.launch import as_process, launch
    from napari_unet.model.files import load_model
    from napari_unet.training.distributed import joined
    from napari_unet.training.train import last_path_for

    if args.nproc is not None:
        return launch(args)
    output = check_model_output(args)
    resume = last_path_for(output) if args.resume else None
    if resume is not None and not resume.is_file():
        raise InputError(f"--resume: {resume} (the last model of {output}) does not exist")
    config = config_from_args(args)
    resumed = load_model(resume).config if resume else None  # the run goes on with its own
    with joined((resumed or config).train.device) as world, world.stopping_on_signals():
        # From here on, a signal stops a process of a group only between two updates.
        return as_process(world, lambda: _train(args, world, output, config, resume, resumed))


def _train(args, world, output: Path, config, resume: Path | None, resumed) -> int:
    """Train as one process of ``world`` (``resumed``: the resumed run's config); 0 prints."""
    from napari_unet.cli.launch import record
    from napari_unet.config import resolve_preset
    from napari_unet.jobs import drain
    from napari_unet.model.files import load_model
    from napari_unet.training.distributed import PeerLost
    from napari_unet.training.progress import TrainingError
    from napari_unet.training.train import last_path_for, train

    say = print if world.main else _quiet
    image, labels = read_pair(args.images, args.labels)
    if resumed:
        fit_tile(resumed, image.shape)
    else:
        trains = config if not args.init else dataclasses.replace(
            config, model=load_model(args.init).config.model)  # the --init model's network
        config = config.replace(train={"tile": fit_tile(trains, image.shape).train.tile})
        preset = resolve_preset(args.preset, args.cfg_device or "auto")
        network = f"; the network of {args.init}" if args.init else ""
        say(f"preset {preset}: {describe_config(config)}{network}")
    batch = (resumed or config).train.batch_size
    if batch % world.size:
        say(f"note: batch size {batch} over {world.size} processes: some hold no tile of some "
            f"batches; a multiple of {world.size} keeps all of them busy")
    jobs = train(image, labels, config, output=output, init=args.init, resume=resume,
                 world=world)
    view = TrainBar(config.train.minutes) if world.main else None
    try:
        result = drain(jobs, view.show if view else None)
    except KeyboardInterrupt:
        jobs.close()
        _close(view)
        say(f"\ninterrupted: the last model is in {last_path_for(output)}; continue with "
            "--resume")
        return 130
    except (TrainingError, PeerLost) as err:
        record(err)  # for torchrun, which names the process that failed first
        _close(view)
        last = f"; the last model is in {last_path_for(output)}" if isinstance(err, PeerLost) \
            else ""
        say(f"napari-unet train: {err}{last}")
        return 1
    finally:
        _close(view)
    say(f"stopped after {result.reason}: best model {result.best_path}, last model "
        f"{result.last_path}")
    return 0


def _quiet(*args, **kwargs) -> None:
    """Print nothing (processes other than 0 of a group)."""


def _close(view: TrainBar | None) -> None:
    if view is not None:
        view.close()


def check_model_output(args: argparse.Namespace) -> Path:
    """Check ``train -o`` before any work: never an input, never another run's files.

    The rules of `napari_unet.model.files.check_model_files`: the model and its
    ``.last`` sibling may be neither the images, the labels, the ``--init`` model
    nor the ``--config`` file, even with ``--overwrite``; an existing one needs
    ``--resume`` (which continues the ``.last`` file, by design) or ``--overwrite``.
    The folder must exist.

    Returns
    -------
    output : Path
    """
    from napari_unet.model.files import check_model_files, model_path
    from napari_unet.training.train import last_path_for

    output = Path(args.output)
    inputs = {"the image file": Path(args.images), "the label file": Path(args.labels)}
    if args.init:
        inputs["the --init model"] = model_path(args.init)
    if args.config:
        inputs["the --config file"] = Path(args.config)
    check_model_files(output, last_path_for(output), inputs,
                      replace=args.resume or args.overwrite,
                      names=("-o", "the last model of -o,"),
                      to_replace="use --resume to continue it or --overwrite to replace it")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such folder")
    return output


def run_lr_find(args: argparse.Namespace) -> int:
    """``napari-unet lr-find``: print the loss-vs-learning-rate curve and a suggestion."""
    from napari_unet.jobs import drain
    from napari_unet.training.lr_find import lr_find

    config = config_from_args(args)
    image, labels = read_pair(args.images, args.labels)
    config = fit_tile(config, image.shape)
    sweep = lr_find(image, labels, config, start=args.start, end=args.end, steps=args.steps)
    bar = progress_bar(args.steps, "lr")

    def show(point) -> None:
        bar.update(1)
        bar.set_postfix(lr=f"{point.lr:.2g}", loss=f"{point.smoothed:.4f}")

    try:
        result = drain(sweep, show)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"lr": result.lrs, "loss": result.losses, "smoothed": result.smoothed,
                          "suggestion": result.suggestion, "diverged": result.diverged}))
        return 0
    print(f"{'learning rate':>14} {'loss':>10} {'smoothed':>10}")
    for lr, loss, smooth in zip(result.lrs, result.losses, result.smoothed, strict=True):
        print(f"{lr:14.3g} {loss:10.4f} {smooth:10.4f}")
    if result.diverged:
        print(f"the loss diverged at {result.lrs[-1]:.3g}")
    if result.suggestion is None:
        print("no suggestion: the loss did not fall; try a wider range or more steps")
    else:
        print(f"suggested learning rate: {result.suggestion:.3g}")
    return 0


def add_train(jobs) -> None:
    """Register the train and lr-find subcommands."""
    train = jobs.add_parser(
        "train", help="train a U-Net on an image and its labels",
        description="Train a U-Net. The best model (by the validation score) goes to MODEL, "
        "the last one to its .last sibling, saved every few minutes; --resume continues it.",
    )
    train.add_argument("images", help="TIFF image, (Y, X) or (Z, Y, X)")
    train.add_argument("labels", help="TIFF labels: 0/1/2 annotation or 0/255 ISBI convention")
    train.add_argument("-o", "--output", required=True, metavar="MODEL",
                       help="model file (never one of the inputs)")
    train.add_argument("--resume", action="store_true", help="continue MODEL's last model")
    train.add_argument("--init", metavar="MODEL", help="start from this model's weights (a "
                       "file, or isbi2012: the bundled ISBI 2012 model)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an existing MODEL and its last model")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train with N processes on this machine (one per GPU, or CPU "
                       "processes): starts torchrun's launcher; the same as torchrun "
                       "--standalone --nproc-per-node N -m napari_unet train ...")
    add_config_flags(train)
    train.set_defaults(run=run_train)

    lr = jobs.add_parser(
        "lr-find", help="learning-rate range test",
        description="Sweep the learning rate exponentially, one update per rate, and print the "
        "loss curve with a suggested rate.",
    )
    lr.add_argument("images", help="TIFF image, (Y, X) or (Z, Y, X)")
    lr.add_argument("labels", help="TIFF labels: 0/1/2 annotation or 0/255 ISBI convention")
    lr.add_argument("--start", type=float, default=1e-6, help="first rate (1e-6)")
    lr.add_argument("--end", type=float, default=10.0, help="last rate (10)")
    lr.add_argument("--steps", type=int, default=100, help="number of rates (100)")
    lr.add_argument("--json", action="store_true", help="print the curve as JSON")
    add_config_flags(lr, training=False)
    lr.set_defaults(run=run_lr_find)
