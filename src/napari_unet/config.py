"""Frozen configuration dataclasses with the paper's defaults.

The GUI, the command line and a JSON/YAML config file all build the same
objects; the model file stores them (`Config.to_dict`) so that a model carries
how it was made.
"""

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from napari_unet.errors import InputError
from napari_unet.training.augment_config import AugmentConfig
from napari_unet.training.weights import WeightConfig


def check_fields(config) -> None:
    """Check a config's Literal choices and numeric ranges; raise InputError naming the field."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if get_origin(hint) is Literal and value not in get_args(hint):
            raise InputError(f"{f.name} must be one of {list(get_args(hint))}, got {value!r}")
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float) and value < 0:
            raise InputError(f"{f.name} must not be negative, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The network (arguments of `napari_unet.UNet`); defaults are the paper's.

    Attributes
    ----------
    in_channels, out_channels : int
        1 input channel (EM), 2 classes (membrane, interior).
    depth : int
        Resolution levels: 5 in the paper (64 to 1024 channels).
    base_channels : int
        Channels of the first level: 64 in the paper.
    padding : {'valid', 'same'}
        'valid': unpadded convolutions (the paper; overlap-tile prediction).
    batch_norm : bool
        BatchNorm after each convolution (not in the paper).
    dropout : float
        The paper's drop-out at the end of the contracting path (0 = none).
    """

    in_channels: int = 1
    out_channels: int = 2
    depth: int = 5
    base_channels: int = 64
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False
    dropout: float = 0.0

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; defaults follow the paper where it says.

    Attributes
    ----------
    epochs : int
        Maximum number of epochs.
    samples_per_epoch : int or None
        Tiles per epoch; None: enough tiles to cover every training slice once.
    minutes : float or None
        Wall-clock budget; training stops cleanly (and saves) when it runs out.
    tile : int
        Side of the output tile the loss sees (388 in the paper); the input tile
        is larger for a 'valid' network (572 for 388).
    batch_size : int
        Tiles per step (1 in the paper: large tiles rather than large batches).
    accumulate : int
        Steps whose gradients add up before one optimizer update.
    optimizer : {'sgd', 'adam'}
        SGD with high momentum (0.99) as in the paper, or Adam.
    lr : float
        Learning rate (the paper gives none; 0.01 suits SGD with momentum 0.99).
    momentum : float
        SGD momentum.
    weight_decay : float
        L2 penalty.
    schedule : {'none', 'cosine', 'plateau'}
        Learning-rate schedule. 'cosine' falls from ``lr`` to 0 over the run:
        over its epochs, or over ``minutes`` when the time budget ends it first.
    val_slices : tuple of int or None
        Slices kept for validation; None: a few slices spread over the stack.
    val_every : int
        Validate every this many epochs.
    monitor : {'v_rand', 'v_info', 'pixel_error', 'val_loss'}
        Validation figure that picks the best model and drives early stopping.
    patience : int or None
        Stop after this many validations without improvement (None: never).
    threshold : float or None
        Membrane threshold of the exported mask (0 < threshold < 1); None: the one
        with the best V_rand + pixel accuracy on the validation slices
        (`napari_unet.training.validation.pick_threshold`).
    close_gaps : float or None
        Close the exported mask's gaps: also mark as membrane the watershed lines
        between the cells seeded where P(membrane) is at most this
        (`napari_unet.prediction.postprocess.gap_lines`); None: the threshold alone.
    seed : int
        Seeds sampling, augmentation and initialisation.
    device : {'auto', 'cpu', 'cuda', 'mps'}
        'auto' picks CUDA, then MPS, then the CPU.
    precision : {'auto', 'float32', 'bfloat16', 'float16'}
        'auto': bfloat16 mixed precision on CUDA, float32 elsewhere.
    num_workers : int or None
        DataLoader worker processes; None: chosen from the device and CPU count.
    checkpoint_minutes : float
        Save the last model at least this often.
    """

    epochs: int = 100
    samples_per_epoch: int | None = None
    minutes: float | None = None
    tile: int = 388
    batch_size: int = 1
    accumulate: int = 1
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: Literal["none", "cosine", "plateau"] = "none"
    val_slices: tuple[int, ...] | None = None
    val_every: int = 1
    monitor: Literal["v_rand", "v_info", "pixel_error", "val_loss"] = "v_rand"
    patience: int | None = 20
    threshold: float | None = None
    close_gaps: float | None = None
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    num_workers: int | None = None
    checkpoint_minutes: float = 5.0

    def __post_init__(self):
        check_fields(self)
        for name in ("epochs", "tile", "batch_size", "accumulate", "val_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr!r}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise InputError(f"threshold must be between 0 and 1, got {self.threshold!r}")
        if self.close_gaps is not None and not 0 < self.close_gaps < 1:
            raise InputError(f"close_gaps must be between 0 and 1, got {self.close_gaps!r}")


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    weights: WeightConfig = field(default_factory=WeightConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return plain, JSON-serialisable nested dicts."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build a config from nested dicts, naming any unknown section or key."""
        if not isinstance(data, dict):
            raise InputError("a config is a mapping of sections (model, train, weights, augment)")
        sections = {f.name: f.default_factory for f in fields(cls)}
        unknown = sorted(set(data) - set(sections))
        if unknown:
            raise InputError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
        return cls(**{name: _section(sections[name], data.get(name) or {}, name)
                      for name in sections})

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """Return a copy with some fields of some sections changed."""
        changes = {}
        for name, values in sections.items():
            current = getattr(self, name)
            changes[name] = _section(type(current), {**dataclasses.asdict(current), **values},
                                     name)
        return dataclasses.replace(self, **changes)


def _section(kind: type, values: dict[str, Any], name: str):
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown {name} setting(s) {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return kind(**values)
    except (TypeError, ValueError) as err:
        raise InputError(f"bad {name} settings: {err}") from None


RETRAIN_DEFAULTS = {"epochs": 20, "minutes": 5.0}
"""The budget Correct and retrain starts with (the learning rate is the model's own);
benchmarks/bench_fine_tuning.py measures what it gives."""

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Ronneberger et al. 2015 as written: the dataclass defaults.
    "paper": {},
    # The recipe that gives the best mask in minutes on a CPU core (docs/training.md has the
    # ablation behind every entry).
    "cpu": {
        "model": {"padding": "same", "base_channels": 16, "batch_norm": True},
        "train": {"optimizer": "adam", "lr": 3e-3, "tile": 192, "batch_size": 4,
                  "weight_decay": 0.0, "threshold": 0.6, "close_gaps": 0.2},
        # Cross-entropy with membrane pixels counted twice: thin membranes; the paper's
        # weight map thickens the mask. The weight 2 pushes P(membrane) up (a pixel
        # that is membrane half the time gets 2/3), so the mask is cut at 0.6, and the
        # gaps a higher cut opens are closed by the watershed lines between the cells.
        "weights": {"w0": 0.0, "balance": False, "membrane_weight": 2.0},
        # Flips and 90-degree rotations only: in minutes of training, the paper's
        # deformations and grey-value noise slow learning more than they help.
        "augment": {"affine_p": 0.0, "elastic_p": 0.0, "fine_elastic_p": 0.0,
                    "brightness_contrast_p": 0.0, "multiplicative_noise_p": 0.0,
                    "gauss_noise_p": 0.0},
    },
}
"""Named settings: ``paper`` is the paper exactly, ``cpu`` the recipe that wins on a CPU.
Explicit settings (flags, a config file, the form) override a preset's."""

PRESET_HELP = {
    "auto": "cpu on a CPU or Apple GPU, paper on an NVIDIA GPU",
    "paper": "the paper: valid padding, 64 channels, 388 px tiles, SGD momentum 0.99, "
             "w0 10, sigma 5",
    "cpu": "same padding, 16 channels, batch norm, 192 px tiles, batch 4, Adam 3e-3, "
           "cross-entropy with membranes weighted 2, mask cut at 0.6 with its gaps "
           "closed, "
           "flips and 90-degree rotations only",
}


def resolve_preset(name: str, device: str = "auto") -> str:
    """Return the preset that ``name`` means on ``device`` ('auto' picks by device).

    Parameters
    ----------
    name : {'auto', 'paper', 'cpu'}
    device : str
        'auto', 'cpu', 'cuda', 'mps' or a torch device string; 'auto' asks PyTorch.

    Returns
    -------
    preset : str
        A key of `PRESETS`.
    """
    if name != "auto":
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose auto, {', '.join(PRESETS)}")
        return name
    if device == "auto":
        from napari_unet.devices import pick_device

        device = pick_device("auto").type
    return "paper" if device.split(":")[0] == "cuda" else "cpu"


def config_for_preset(name: str = "auto", *, device: str = "auto") -> Config:
    """Return the Config of a preset (see `PRESETS`); 'auto' picks by device.

    Parameters
    ----------
    name : {'auto', 'paper', 'cpu'}
    device : str
        The device training will use ('auto': the best one here).

    Returns
    -------
    config : Config
    """
    return Config().replace(**PRESETS[resolve_preset(name, device)])


def parse_slices(text: str, *, what: str = "validation slices") -> tuple[int, ...] | None:
    """Parse ``'5, 15, 25'`` into ``(5, 15, 25)``; empty text means 'choose for me' (None).

    ``'none'`` means no slice at all (``()``: train on every annotated slice).

    Parameters
    ----------
    text : str
        Slice indices separated by commas (or semicolons).
    what : str
        How an error message names the field (a flag or a form field).

    Returns
    -------
    slices : tuple of int or None
    """
    if text.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        return None
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise InputError(f"{what}: comma-separated slice numbers such as 5,15,25, "
                         f"got {text!r}") from None


def load_config(path: str | Path, *, base: Config | None = None) -> Config:
    """Read a config from a JSON or YAML file.

    Parameters
    ----------
    path : str or Path
        ``.json``, ``.yaml`` or ``.yml``.
    base : Config, optional
        Settings the file does not give (a preset); the paper's by default.

    Returns
    -------
    config : Config
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # json and yaml raise unrelated error types
        raise InputError(f"{path}: not valid JSON/YAML ({str(err).splitlines()[0]})") from None
    data = data or {}
    Config.from_dict(data)  # names any unknown section or key
    return (base or Config()).replace(**{name: values or {} for name, values in data.items()})
