"""The command line's training jobs: ``train``, ``lr-find`` and ``evaluate``.

Each job reads its files, builds a `Config` (defaults, then ``--config FILE``,
then flags), and drains the same generator the napari widgets drive, with a
terminal progress bar.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_unet.errors import InputError
from napari_unet.jobs import format_duration

AUTO = "auto"
OFF = "off"


def threshold_arg(text: str) -> float | str:
    """``--threshold``: a number between 0 and 1, or 'auto' (chosen on the validation slices)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a number between 0 and 1 or 'auto', not {text!r}") from None


def close_gaps_arg(text: str) -> float | str:
    """``--close-gaps``: a seed level between 0 and 1, or 'off'."""
    if text.strip().lower() == OFF:
        return OFF
    try:
        level = float(text)
    except ValueError:
        level = -1.0
    if not 0 < level < 1:
        raise argparse.ArgumentTypeError(f"a number between 0 and 1 or 'off', not {text!r}")
    return level


def switch_arg(text: str) -> bool:
    """Parse an on/off flag value."""
    value = text.strip().lower()
    if value not in ("on", "off", "true", "false", "yes", "no", "1", "0"):
        raise argparse.ArgumentTypeError(f"on or off, not {text!r}")
    return value in ("on", "true", "yes", "1")


# Flags that set config fields: (flag, section, field, type, help).
CONFIG_FLAGS = [
    ("--epochs", "train", "epochs", int, "maximum number of epochs (100)"),
    ("--minutes", "train", "minutes", float, "wall-clock budget; stops cleanly and saves"),
    ("--samples-per-epoch", "train", "samples_per_epoch", int,
     "tiles per epoch (default: enough to cover every training slice once)"),
    ("--device", "train", "device", str, "auto (CUDA, then MPS, then CPU), cpu, cuda, mps"),
    ("--precision", "train", "precision", str, "auto (bf16 on CUDA), float32, bfloat16, float16"),
    ("--seed", "train", "seed", int, "seed of sampling, augmentation and initialisation"),
    ("--tile", "train", "tile", int, "output tile side in pixels (paper 388, cpu 192); "
     "rounded up to a side the network can use, with a notice"),
    ("--batch-size", "train", "batch_size", int, "tiles per step (paper 1, cpu 4)"),
    ("--accumulate", "train", "accumulate", int, "steps per optimizer update"),
    ("--optimizer", "train", "optimizer", str, "sgd (paper, momentum 0.99) or adam (cpu)"),
    ("--lr", "train", "lr", float, "learning rate (paper 0.01, cpu 0.003)"),
    ("--momentum", "train", "momentum", float, "SGD momentum (0.99)"),
    ("--schedule", "train", "schedule", str, "none (default), cosine or plateau"),
    ("--patience", "train", "patience", int, "validations without improvement before stopping"),
    ("--monitor", "train", "monitor", str, "v_rand (default), v_info, pixel_error or val_loss"),
    ("--workers", "train", "num_workers", int, "data-loading processes"),
    ("--threshold", "train", "threshold", threshold_arg,
     "membrane threshold of the exported mask: a number (cpu 0.6), or auto (paper): the best "
     "V_rand + pixel accuracy on the validation slices"),
    ("--close-gaps", "train", "close_gaps", close_gaps_arg,
     "close the mask's gaps with the watershed lines between the cells seeded where "
     "P(membrane) is at most this (cpu 0.2), or off (paper)"),
    ("--depth", "model", "depth", int, "resolution levels of the U-Net (5)"),
    ("--base-channels", "model", "base_channels", int,
     "channels of the first level (paper 64, cpu 16)"),
    ("--padding", "model", "padding", str, "valid (paper) or same (cpu)"),
    ("--w0", "weights", "w0", float, "border weight w0 of eq. 2 (paper 10, cpu 0)"),
    ("--sigma", "weights", "sigma", float, "border width sigma of eq. 2 (paper 5)"),
    ("--balance", "weights", "balance", switch_arg,
     "on/off: class-balancing weights w_c of eq. 2 (paper on, cpu off)"),
    ("--membrane-weight", "weights", "membrane_weight", float,
     "factor on the membrane pixels' class weight (paper 1, cpu 2)"),
    ("--augment-strength", "augment", "strength", float, "0 = no augmentation, 1 = default"),
]


TRAIN_ONLY = {"epochs", "minutes", "samples_per_epoch", "lr", "schedule", "patience", "monitor",
              "threshold", "close_gaps"}
"""Config flags of ``train`` alone: how long to train, what to validate, the learning
rate ``lr-find`` sweeps over."""


def add_config_flags(parser: argparse.ArgumentParser, *, training: bool = True) -> None:
    """Add ``--preset``, ``--config`` and the config flags (all default to 'not given').

    Without ``training``, the flags of `TRAIN_ONLY` and ``--val-slices`` are left out.
    """
    from napari_unet.config import PRESET_HELP

    parser.add_argument(
        "--preset", default="auto", choices=list(PRESET_HELP),
        help="starting settings (default auto); " +
             "; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items()) +
             ". --config and flags override it")
    parser.add_argument("--config", metavar="FILE", help="settings as JSON or YAML; flags win")
    if training:
        parser.add_argument("--val-slices", metavar="LIST",
                            help="comma-separated validation slice indices, e.g. 5,15,25; none: "
                            "no validation")
    for flag, _, name, kind, text in CONFIG_FLAGS:
        if training or name not in TRAIN_ONLY:
            parser.add_argument(flag, dest=f"cfg_{name}", type=kind, metavar=name.upper(),
                                help=text)


def config_from_args(args: argparse.Namespace):
    """Build the Config: the preset, then the config file, then the flags given."""
    from napari_unet.config import config_for_preset, load_config, parse_slices

    config = config_for_preset(args.preset, device=args.cfg_device or "auto")
    if args.config:
        config = load_config(args.config, base=config)
    sections: dict[str, dict] = {}
    for _, section, name, _, _ in CONFIG_FLAGS:
        value = getattr(args, f"cfg_{name}", None)
        if value is not None:
            sections.setdefault(section, {})[name] = None if value in (AUTO, OFF) else value
    if getattr(args, "val_slices", None) is not None:
        sections.setdefault("train", {})["val_slices"] = parse_slices(args.val_slices,
                                                                    what="--val-slices")
    return config.replace(**sections)


def tile_notice(requested: int, used: int, depth: int, padding: str) -> None:
    """Say in one line (on stderr) that a tile side was rounded to one the network can use."""
    print(f"note: tile {requested} rounded to {used}, a tile side that a depth-{depth} U-Net "
          f"with {padding} padding can use", file=sys.stderr)


def fit_tile(config, shape: tuple[int, ...]):
    """Round the training tile to one the network can use and warn about small slices.

    A tile the network cannot use is rounded up to the next one it can (with a
    `tile_notice`). Slices smaller than one training tile, or than the smallest
    input the network takes, still train: their tiles are filled by mirroring the
    slice (the paper's Fig. 2), which a one-line warning says. Slices under
    `napari_unet.checks.MIN_SIDE` pixels a side are refused.

    Parameters
    ----------
    config : Config
        With the network that will train (an ``--init`` model's, say).
    shape : tuple of int
        The image's shape; its last two axes are a slice.

    Returns
    -------
    config : Config
        With the tile that is used.

    Raises
    ------
    InputError
        For slices under `napari_unet.checks.MIN_SIDE` pixels a side.
    """
    from napari_unet.checks import check_slice_side
    from napari_unet.prediction.tiles import TilePlan

    m, tile = config.model, config.train.tile
    used = TilePlan.for_training(m, tile).output
    if used != tile:
        tile_notice(tile, used, m.depth, m.padding)
        config = config.replace(train={"tile": used})
    smallest = TilePlan.for_training(m, 1).input
    height, width = shape[-2:]
    check_slice_side(shape, to="train on")
    if min(height, width) < max(used, smallest):
        what = (f"one training tile ({used} px)" if used >= smallest else
                f"one network input ({smallest} px for a depth-{m.depth} U-Net with "
                f"{m.padding} padding)")
        print(f"warning: slices of {height}x{width} px are smaller than {what}; training "
              "fills its tiles by mirroring the slice", file=sys.stderr)
    return config


def read_pair(images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file (training checks that they belong together)."""
    from napari_unet.io.stacks import read_image, read_labels

    return read_image(images), read_labels(labels)


def progress_bar(total: int, unit: str):
    """Return a terminal progress bar (a bar of seconds shows no rate: it would read 1 s/s)."""
    from tqdm import tqdm

    fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}{postfix}]" if unit == "s" else None
    return tqdm(total=total, unit=unit, dynamic_ncols=True, leave=True, bar_format=fmt)


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
    """``napari-unet train``: train and save the best and the last model."""
    from napari_unet.config import resolve_preset
    from napari_unet.jobs import drain
    from napari_unet.model.files import load_model
    from napari_unet.training.progress import TrainingError
    from napari_unet.training.train import last_path_for, train

    output = check_model_output(args)
    resume = last_path_for(output) if args.resume else None
    if resume is not None and not resume.is_file():
        raise InputError(f"--resume: {resume} (the last model of {output}) does not exist")
    config = config_from_args(args)
    image, labels = read_pair(args.images, args.labels)
    if resume:  # the run goes on with its own settings
        fit_tile(load_model(resume).config, image.shape)
    else:
        trains = config if not args.init else dataclasses.replace(
            config, model=load_model(args.init).config.model)  # the --init model's network
        config = config.replace(train={"tile": fit_tile(trains, image.shape).train.tile})
        preset = resolve_preset(args.preset, args.cfg_device or "auto")
        network = f"; the network of {args.init}" if args.init else ""
        print(f"preset {preset}: {describe_config(config)}{network}")
    jobs = train(image, labels, config, output=output, init=args.init, resume=resume)
    view = TrainBar(config.train.minutes)
    try:
        result = drain(jobs, view.show)
    except KeyboardInterrupt:
        jobs.close()
        view.close()
        print(f"\ninterrupted: the last model is in {last_path_for(output)}; continue with "
              "--resume")
        return 130
    except TrainingError as err:
        view.close()
        print(f"napari-unet train: {err}")
        return 1
    finally:
        view.close()
    print(f"stopped after {result.reason}: best model {result.best_path}, last model "
          f"{result.last_path}")
    return 0


def check_model_output(args: argparse.Namespace) -> Path:
    """Check ``train -o`` before any work: never an input, never another run's files.

    The model and its ``.last`` sibling may be neither the images, the labels,
    the ``--init`` model nor the ``--config`` file, even with ``--overwrite``;
    an existing one needs ``--resume`` (which continues the ``.last`` file, by
    design) or ``--overwrite``.

    Returns
    -------
    output : Path
    """
    from napari_unet.io.stacks import check_not_inputs
    from napari_unet.model.files import is_bundled, model_path
    from napari_unet.training.train import last_path_for

    output = Path(args.output)
    last = last_path_for(output)
    inputs = {"the image file": Path(args.images), "the label file": Path(args.labels)}
    if args.init:
        inputs["the --init model"] = model_path(args.init)
    if args.config:
        inputs["the --config file"] = Path(args.config)
    check_not_inputs({"-o": output, "the last model of -o,": last}, inputs)
    if is_bundled(output) or is_bundled(last):
        raise InputError(f"-o {output} is a model installed with napari-unet; choose another "
                         "name")
    if output.is_dir():
        raise InputError(f"-o {output} is a folder; name the model file, e.g. "
                         f"{output / 'model.pt'}")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such folder")
    existing = [path for path in (output, last) if path.exists()]
    if existing and not (args.resume or args.overwrite):
        raise InputError(f"{existing[0]} exists; use --resume to continue it or --overwrite to "
                         "replace it")
    return output


def describe_config(config) -> str:
    """Return the settings that matter most, in one line."""
    m, t, w = config.model, config.train, config.weights
    return (f"depth {m.depth}, width {m.base_channels}, {m.padding} padding"
            f"{', batch norm' if m.batch_norm else ''}; tile {t.tile}, batch {t.batch_size}, "
            f"{t.optimizer} lr {t.lr:g}; {describe_weights(w)}; "
            f"{describe_mask(t.threshold, t.close_gaps)}; augmentation: "
            f"{describe_augment(config.augment)}")


def describe_mask(threshold: float | None, close_gaps: float | None) -> str:
    """Say how the mask is cut: ``threshold 0.6, gaps closed at 0.2``."""
    cut = AUTO if threshold is None else f"{threshold:g}"
    return f"threshold {cut}" + ("" if close_gaps is None else f", gaps closed at {close_gaps:g}")



def describe_weights(weights) -> str:
    """Name the loss weights (``'w0 10, sigma 5, class balance'``, ``'membranes x2'``)."""
    w = weights
    parts = [f"w0 {w.w0:g}, sigma {w.sigma:g}"] if w.w0 > 0 else []
    parts += ["class balance"] if w.balance else []
    parts += [f"membranes x{w.membrane_weight:g}"] if w.membrane_weight != 1 else []
    return ", ".join(parts) or "plain cross-entropy"


def describe_augment(augment) -> str:
    """Name the augmentations a config applies (``'flips'``, ``'flips, elastic'``, ``'none'``)."""
    a = augment
    grey = max(a.brightness_contrast_p, a.multiplicative_noise_p, a.gauss_noise_p)
    kinds = [("flips", a.flip_p), ("affine", a.affine_p), ("elastic", a.elastic_p),
             ("fine elastic", a.fine_elastic_p), ("grey values", grey)]
    names = [name for name, p in kinds if p > 0] if a.strength > 0 else []
    scale = f" at strength {a.strength:g}" if names and a.strength != 1 else ""
    return (", ".join(names) or "none") + scale


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


def run_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: print ISBI 2012 scores of a mask against labels as JSON.

    For probabilities, the scores at ``--threshold`` (the mask that threshold
    exports) and the challenge's maxima over the thresholds 0.0, 0.1, ..., 1.0.
    """
    from napari_unet.evaluation.scores import evaluate, evaluate_thresholds
    from napari_unet.io.stacks import read_labels, read_tiff

    prediction = read_tiff(args.mask)
    if not np.issubdtype(prediction.dtype, np.floating):
        prediction = read_labels(args.mask)
    elif prediction.size and not (prediction.min() >= 0 and prediction.max() <= 1):
        raise InputError(f"{args.mask}: float values must be probabilities in [0, 1]")
    truth = read_labels(args.labels)
    scores = evaluate(prediction, truth, threshold=args.threshold)
    if np.issubdtype(prediction.dtype, np.floating):
        sweep = evaluate_thresholds(prediction, truth)
        scores.update({key: sweep[key] for key in ("v_rand_max", "v_rand_threshold",
                                                   "v_info_max", "v_info_threshold")})
    if not args.per_slice:
        scores.pop("per_slice", None)
    print(scores_table(scores) if args.format == "table" else scores_json(scores))
    return 0


def scores_json(scores: dict) -> str:
    """JSON with one score per line, lists on one line and one line per slice's scores."""
    def value(item) -> str:
        if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            return "[\n" + ",\n".join(f"    {json.dumps(v)}" for v in item) + "\n  ]"
        return json.dumps(item)

    lines = [f"  {json.dumps(key)}: {value(item)}" for key, item in scores.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def scores_table(scores: dict) -> str:
    """Lay the scores out as text: one score per row, then one row per slice."""
    from napari_unet.training.progress import format_slices

    def cell(item) -> str:
        return f"{item:.4f}" if isinstance(item, float) else str(item)

    summary = {key: cell(item) for key, item in scores.items() if key != "per_slice"}
    if "slices" in summary:
        summary["slices"] = format_slices(scores["slices"])
    width = max(map(len, summary), default=0)
    lines = [f"{key:<{width}}  {text:>8}" for key, text in summary.items()]
    rows = scores.get("per_slice") or []
    if rows:
        columns = list(rows[0])
        widths = [max(len(name), 6) for name in columns]
        lines.append("")
        lines.append("  ".join(f"{name:>{w}}" for name, w in zip(columns, widths, strict=True)))
        lines += ["  ".join(f"{cell(row[name]):>{w}}" for name, w in zip(columns, widths,
                                                                           strict=True))
                  for row in rows]
    return "\n".join(lines)


def add_jobs(jobs) -> None:
    """Register the train, lr-find and evaluate subcommands."""
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

    ev = jobs.add_parser(
        "evaluate", help="score a mask against labels (pixel error, V_rand, V_info)",
        description="Score a predicted mask (or probabilities) against labels as the ISBI "
        "2012 challenge does and print JSON (or a table). For probabilities it adds the "
        "challenge's best V_rand and V_info over the thresholds 0, 0.1, ..., 1 and where they "
        "were reached.",
    )
    ev.add_argument("mask", help="mask TIFF (exported by napari-unet, or 0/1/2 labels) or "
                    "float probabilities")
    ev.add_argument("labels", help="ground-truth labels TIFF (either convention)")
    ev.add_argument("--threshold", type=float, default=0.5, help="for probabilities (0.5)")
    ev.add_argument("--per-slice", action="store_true", help="include every slice's scores")
    ev.add_argument("--format", choices=("json", "table"), default="json",
                    help="json (default; lists on one line, one line per slice) or table")
    ev.set_defaults(run=run_evaluate)
