"""Model files: one file with the weights, the configs, the normalisation and the history.

Loading never runs code from the file: ``torch.load(..., weights_only=True)``
accepts only tensors and plain containers, so a file carrying a pickled object
is refused before anything in it executes. Writes are atomic (temporary file,
then rename).
"""

import dataclasses
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_unet.config import Config
from napari_unet.errors import InputError
from napari_unet.io.stacks import atomic_write, check_not_inputs
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet

FORMAT = "napari-unet-model"
VERSION = 1

BUNDLED = {"isbi2012": Path(__file__).parents[1] / "data" / "models" / "isbi2012.pt"}
"""Models shipped with the package, by the name that stands for a model file anywhere
(``napari-unet predict isbi2012 ...``); docs/models.md is their model card."""


def is_bundled(path: str | os.PathLike) -> bool:
    """Whether a path is one of the bundled models' files (never to be written next to)."""
    return Path(path).resolve() in {p.resolve() for p in BUNDLED.values()}


def model_path(model: str | os.PathLike) -> Path:
    """Return the file of a model given by path or by a bundled model's name (`BUNDLED`)."""
    if isinstance(model, str) and model in BUNDLED:
        return BUNDLED[model]
    return Path(model)


def check_model_files(
    output: Path,
    last: Path,
    inputs: Mapping[str, os.PathLike],
    *,
    replace: bool,
    names: tuple[str, str],
    to_replace: str,
) -> None:
    """Refuse model files for a training run that would lose a file, before any work.

    The best model ``output`` and the run's last model ``last`` may be neither one
    of ``inputs`` nor a bundled model, whatever ``replace`` says, and ``output`` is
    not a folder; an existing one (an earlier run's) is replaced only with
    ``replace``. The command line's ``train -o`` and the Training widget's "save
    model to" both check these rules, naming the files their own way.

    Parameters
    ----------
    output, last : Path
        The best model's file and its last model's
        (`napari_unet.training.train.last_path_for`).
    inputs : mapping of str to path
        The files the run reads, by how the messages name them.
    replace : bool
        Whether existing model files may be replaced (overwriting allowed, or resuming).
    names : (str, str)
        How the messages name ``output`` and ``last`` (``'-o'``, ``'the last model of -o,'``).
    to_replace : str
        What the message on an existing file says to do (``'use --overwrite to replace it'``).

    Raises
    ------
    InputError
        In one line, naming the file.
    """
    name, last_name = names
    check_not_inputs({name: output, last_name: last}, inputs)
    if is_bundled(output) or is_bundled(last):
        raise InputError(f"{name} {output} is a model installed with napari-unet; choose another "
                         "name")
    if output.is_dir():
        raise InputError(f"{name} {output} is a folder; name the model file, e.g. "
                         f"{output / 'model.pt'}")
    existing = [path for path in (output, last) if path.exists()]
    if existing and not replace:
        raise InputError(f"{existing[0]} exists; {to_replace}")


@dataclass
class ModelFile:
    """What a model file holds.

    Attributes
    ----------
    config : Config
        The network, training, weight-map and augmentation settings.
    normalization : Normalization
    state_dict : dict
        The network's weights.
    history : list of dict
        One record per validation (epoch, step, losses, metrics, seconds).
    training_state : dict
        What resuming needs: epoch, step, optimizer, scheduler and RNG states,
        early-stopping bookkeeping. Empty for a model saved for prediction only.
    """

    config: Config
    normalization: Normalization
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    training_state: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """Membrane threshold chosen by the latest validation (0.5 without one)."""
        for record in reversed(self.history):
            if record.get("threshold") is not None:
                return float(record["threshold"])
        return 0.5

    @property
    def close_gaps(self) -> float | None:
        """Seed level of the gap closing of the exported mask (None: off)."""
        return self.config.train.close_gaps

    def describe(self) -> str:
        """Summarise the model in one line: network, training so far, threshold."""
        m = self.config.model
        text = f"depth {m.depth}, width {m.base_channels}, {m.padding} padding"
        if self.history:
            last = self.history[-1]
            text += f"; trained {last.get('step', '?')} steps"
            scores = [r["v_rand"] for r in self.history if r.get("v_rand") is not None]
            if scores:
                text += f", best V_rand {max(scores):.3f}"
        text += f"; threshold {self.threshold:.2f}"
        return text + ("" if self.close_gaps is None else f", gaps closed at {self.close_gaps:g}")

    def build_model(self) -> UNet:
        """Return the network with these weights, in eval mode."""
        model = make_model(self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def make_model(config: Config) -> UNet:
    """Build the (untrained) network a config describes."""
    return UNet(**dataclasses.asdict(config.model))


def save_model(path: str | os.PathLike, model_file: ModelFile) -> Path:
    """Write a model file atomically; a failed write leaves the old file intact.

    Parameters
    ----------
    path : str or PathLike
    model_file : ModelFile

    Returns
    -------
    path : Path
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model_file.config.to_dict(),
        "normalization": dataclasses.asdict(model_file.normalization),
        "state_dict": {k: v.detach().cpu() for k, v in model_file.state_dict.items()},
        "history": model_file.history,
        "training_state": model_file.training_state,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> ModelFile:
    """Read a model file without executing anything stored in it.

    Parameters
    ----------
    path : str or PathLike
        A model file, the name of a bundled model (``'isbi2012'``, see `BUNDLED`),
        or a bioimage.io package napari-unet wrote (zip or ``rdf.yaml``;
        `napari_unet.model.package.load_package`).
    map_location : str or torch.device
        Where the tensors go.

    Returns
    -------
    model_file : ModelFile

    Raises
    ------
    InputError
        For a missing, corrupt, foreign or newer-format file, or one carrying
        pickled code; for a bioimage.io package of another tool.
    """
    path = model_path(path)
    from napari_unet.model import package  # it builds on this module's ModelFile

    if package.is_package(path):
        return package.load_package(path, map_location=map_location)
    if not path.is_file():
        raise InputError(f"{path}: no such model file (or a bundled model: "
                         f"{', '.join(BUNDLED)})")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # the refusal names the forbidden global
            raise InputError(f"{path}: not a napari-unet model file (unreadable)") from None
        raise InputError(
            f"{path}: refused: the file holds Python objects that could run code when loaded; "
            "it is not a napari-unet model"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise InputError(f"{path}: not a napari-unet model file (unreadable: {err})") from None
    return _from_payload(payload, path)


def _from_payload(payload: Any, path: Path) -> ModelFile:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a napari-unet model file")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise InputError(
            f"{path}: model format version {version} is newer than this napari-unet reads "
            f"({VERSION}); upgrade napari-unet-em"
        )
    try:
        return ModelFile(
            config=Config.from_dict(payload["config"]),
            normalization=Normalization(**{k: float(v)
                                           for k, v in payload["normalization"].items()}),
            state_dict=payload["state_dict"],
            history=list(payload.get("history", [])),
            training_state=dict(payload.get("training_state", {})),
        )
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: damaged napari-unet model file (missing {err})") from None
