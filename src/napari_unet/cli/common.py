"""What the command line's jobs share: argument types, config flags, tiles and progress bars.

The config flags build a `Config` (`config_from_args`); `fit_tile` rounds a training tile to
one the network can use; `read_pair` reads an image with its labels; `describe_config` and its
parts say in one line what a run uses.
"""

import argparse
import sys

import numpy as np

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
