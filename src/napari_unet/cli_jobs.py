"""The command line's training jobs: ``train``, ``lr-find`` and ``evaluate``.

Each job reads its files, builds a `Config` (defaults, then ``--config FILE``,
then flags), and drains the same generator the napari widgets drive, with a
terminal progress bar.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from .errors import InputError

# Flags that set config fields: (flag, section, field, type, help).
CONFIG_FLAGS = [
    ("--epochs", "train", "epochs", int, "maximum number of epochs (default 100)"),
    ("--minutes", "train", "minutes", float, "wall-clock budget; stops cleanly and saves"),
    ("--samples-per-epoch", "train", "samples_per_epoch", int,
     "tiles per epoch (default: enough to cover every training slice once)"),
    ("--device", "train", "device", str, "auto (CUDA, then MPS, then CPU), cpu, cuda, mps"),
    ("--precision", "train", "precision", str, "auto (bf16 on CUDA), float32, bfloat16, float16"),
    ("--seed", "train", "seed", int, "seed of sampling, augmentation and initialisation"),
    ("--tile", "train", "tile", int, "output tile side in pixels (default 388, the paper's)"),
    ("--batch-size", "train", "batch_size", int, "tiles per step (default 1, the paper's)"),
    ("--accumulate", "train", "accumulate", int, "steps per optimizer update"),
    ("--optimizer", "train", "optimizer", str, "sgd (default, momentum 0.99) or adam"),
    ("--lr", "train", "lr", float, "learning rate (default 0.01)"),
    ("--momentum", "train", "momentum", float, "SGD momentum (default 0.99)"),
    ("--schedule", "train", "schedule", str, "none (default), cosine or plateau"),
    ("--patience", "train", "patience", int, "validations without improvement before stopping"),
    ("--monitor", "train", "monitor", str, "v_rand (default), v_info, pixel_error or val_loss"),
    ("--workers", "train", "num_workers", int, "data-loading processes"),
    ("--depth", "model", "depth", int, "resolution levels of the U-Net (default 5)"),
    ("--base-channels", "model", "base_channels", int, "channels of the first level (64)"),
    ("--padding", "model", "padding", str, "valid (default, the paper's) or same"),
    ("--w0", "weights", "w0", float, "border weight w0 of eq. 2 (default 10)"),
    ("--sigma", "weights", "sigma", float, "border width sigma of eq. 2 (default 5)"),
    ("--augment-strength", "augment", "strength", float, "0 = no augmentation, 1 = default"),
]


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and every config flag (all default to 'not given')."""
    parser.add_argument("--config", metavar="FILE", help="settings as JSON or YAML; flags win")
    parser.add_argument("--val-slices", metavar="LIST",
                        help="comma-separated validation slice indices, e.g. 5,15,25")
    for flag, _, name, kind, text in CONFIG_FLAGS:
        parser.add_argument(flag, dest=f"cfg_{name}", type=kind, metavar=name.upper(), help=text)


def config_from_args(args: argparse.Namespace):
    """Build the Config: defaults, then the config file, then the flags given."""
    from .config import Config, load_config, parse_slices

    config = load_config(args.config) if args.config else Config()
    sections: dict[str, dict] = {}
    for _, section, name, _, _ in CONFIG_FLAGS:
        value = getattr(args, f"cfg_{name}")
        if value is not None:
            sections.setdefault(section, {})[name] = value
    if args.val_slices is not None:
        sections.setdefault("train", {})["val_slices"] = parse_slices(args.val_slices,
                                                                    what="--val-slices")
    return config.replace(**sections)


def read_pair(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file (training checks that they belong together)."""
    from .io import read_image, read_labels

    return read_image(images), read_labels(labels)


def progress_bar(total: int, unit: str):
    """Return a terminal progress bar."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, leave=True)


def _format(record: dict) -> str:
    keys = ("train_loss", "val_loss", "pixel_error", "v_rand", "v_info")
    shown = ", ".join(f"{k} {record[k]:.4f}" for k in keys if record.get(k) is not None)
    return f"epoch {record['epoch']}: {shown}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def run_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: train and save the best and the last model."""
    from .train import Event, TrainingError, last_path_for, train

    output = Path(args.output)
    if output.exists() and not (args.resume or args.overwrite):
        raise InputError(f"{output} exists; use --resume to continue it or --overwrite to "
                         "replace it")
    resume = last_path_for(output) if args.resume else None
    if resume is not None and not resume.is_file():
        raise InputError(f"--resume: {resume} (the last model of {output}) does not exist")
    config = config_from_args(args)
    image, labels = read_pair(args.images, args.labels)
    jobs = train(image, labels, config, output=output, init=args.init, resume=resume)
    bar = None
    try:
        while True:
            try:
                progress = next(jobs)
            except StopIteration as stop:
                result = stop.value
                break
            if bar is None:
                bar = progress_bar(progress.total_steps, "step")
                bar.update(progress.step - 1)
            if progress.event is Event.STEP:
                bar.update(progress.step - bar.n)
                bar.set_postfix(loss=f"{progress.loss:.4f}", lr=f"{progress.lr:.2g}",
                                tiles_s=f"{progress.samples_per_s:.2f}",
                                left=_duration(progress.eta_s))
            else:
                bar.write(_format(progress.metrics))
    except KeyboardInterrupt:
        jobs.close()
        print(f"\ninterrupted: the last model is in {last_path_for(output)}; continue with "
              "--resume")
        return 130
    except TrainingError as err:
        print(f"napari-unet train: {err}")
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(f"stopped after {result.reason}: best model {result.best_path}, last model "
          f"{result.last_path}")
    return 0


def run_lr_find(args: argparse.Namespace) -> int:
    """``napari-unet lr-find``: print the loss-vs-learning-rate curve and a suggestion."""
    from .lr_find import lr_find

    config = config_from_args(args)
    image, labels = read_pair(args.images, args.labels)
    sweep = lr_find(image, labels, config, start=args.start, end=args.end, steps=args.steps)
    bar = progress_bar(args.steps, "lr")
    while True:
        try:
            point = next(sweep)
        except StopIteration as stop:
            result = stop.value
            break
        bar.update(1)
        bar.set_postfix(lr=f"{point.lr:.2g}", loss=f"{point.smoothed:.4f}")
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


def run_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: print ISBI 2012 scores of a mask against labels as JSON."""
    from .io import read_labels, read_tiff
    from .metrics import evaluate

    prediction = read_tiff(args.mask)
    if not np.issubdtype(prediction.dtype, np.floating):
        prediction = read_labels(args.mask)
    elif prediction.size and not (prediction.min() >= 0 and prediction.max() <= 1):
        raise InputError(f"{args.mask}: float values must be probabilities in [0, 1]")
    truth = read_labels(args.labels)
    scores = evaluate(prediction, truth, threshold=args.threshold)
    if not args.per_slice:
        scores.pop("per_slice", None)
    print(json.dumps(scores, indent=2))
    return 0


def add_jobs(jobs) -> None:
    """Register the train, lr-find and evaluate subcommands."""
    train = jobs.add_parser(
        "train", help="train a U-Net on an image and its labels",
        description="Train a U-Net. The best model (by the validation score) goes to MODEL, "
        "the last one to its .last sibling, saved every few minutes; --resume continues it.",
    )
    train.add_argument("images", help="TIFF image, (Y, X) or (Z, Y, X)")
    train.add_argument("labels", help="TIFF labels: 0/1/2 annotation or 0/255 ISBI convention")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    train.add_argument("--resume", action="store_true", help="continue MODEL's last model")
    train.add_argument("--init", metavar="MODEL", help="start from this model's weights")
    train.add_argument("--overwrite", action="store_true", help="replace an existing MODEL")
    add_config_flags(train)
    train.set_defaults(run=run_train)

    lr = jobs.add_parser(
        "lr-find", help="learning-rate range test",
        description="Sweep the learning rate exponentially, one update per rate, and print the "
        "loss curve with a suggested rate.",
    )
    lr.add_argument("images")
    lr.add_argument("labels")
    lr.add_argument("--start", type=float, default=1e-6, help="first rate (1e-6)")
    lr.add_argument("--end", type=float, default=10.0, help="last rate (10)")
    lr.add_argument("--steps", type=int, default=100, help="number of rates (100)")
    lr.add_argument("--json", action="store_true", help="print the curve as JSON")
    add_config_flags(lr)
    lr.set_defaults(run=run_lr_find)

    ev = jobs.add_parser(
        "evaluate", help="score a mask against labels (pixel error, V_rand, V_info)",
        description="Score a predicted mask (or probabilities) against labels as the ISBI "
        "2012 challenge does and print JSON.",
    )
    ev.add_argument("mask", help="mask TIFF (exported by napari-unet, or 0/1/2 labels) or "
                    "float probabilities")
    ev.add_argument("labels", help="ground-truth labels TIFF (either convention)")
    ev.add_argument("--threshold", type=float, default=0.5, help="for probabilities (0.5)")
    ev.add_argument("--per-slice", action="store_true", help="include every slice's scores")
    ev.set_defaults(run=run_evaluate)
