"""bioimage.io model packages as model files: recognise them, read the ones napari-unet wrote.

A bioimage.io package is a zip file holding an ``rdf.yaml`` (the model's
description: tensors, pre- and postprocessing, weights, test tensors) and the
files it names; unpacked, it is that ``rdf.yaml`` beside its files. The
Model Zoo's tools (deepImageJ, ilastik, QuPath, napari plugins) read it.

The packages napari-unet writes (`napari_unet.bioimageio.export`) carry,
under ``config.napari_unet``, what a model file holds besides the weights:
the configuration, the normalisation and the training history. Reading one
gives back the `ModelFile` it was written from (the ``pytorch_state_dict``
weights read with ``torch.load(weights_only=True)``, nothing from the package
executed), so it predicts exactly as the model file did, through the same
tiled path, and needs neither bioimageio.spec nor bioimageio.core. Packages
from other tools run through bioimageio.core (`napari_unet.prediction.foreign`).
"""

import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from napari_unet.config import Config
from napari_unet.errors import InputError
from napari_unet.model.files import FORMAT, VERSION, ModelFile
from napari_unet.model.normalization import Normalization

YAML_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
"""The names a package's description may have (also ``*.bioimageio.yaml`` and the like)."""
CONFIG_KEY = "napari_unet"
"""The key under ``config`` of the packages napari-unet writes."""
FORMAT_VERSIONS = ("0.4.", "0.5.")
"""The bioimage.io model format versions read (0.4 through bioimageio.spec's conversion)."""
EXTRA = 'pip install "napari-unet-em[bioimageio]"'
"""How to install what writing packages, and running other tools' packages, needs."""


def is_description_name(name: str) -> bool:
    """Whether a file name is that of a package's description (``rdf.yaml`` and the like)."""
    return any(name == known or name.endswith("." + known) for known in YAML_NAMES)


def is_package(path: str | os.PathLike) -> bool:
    """Whether a path stands for a bioimage.io package rather than a model file.

    That is a ``.zip`` file (damaged or not), another zip file holding a
    description at its top (model files are zip files too, without one), or a
    description file (``rdf.yaml``, ``bioimageio.yaml``, ``*.bioimageio.yaml``).
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    if path.suffix.lower() == ".zip":
        return True
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(is_description_name(name) for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


@dataclass(frozen=True)
class Package:
    """An opened bioimage.io model package: its description and a way to read its files.

    Attributes
    ----------
    path : Path
        The zip file, or the description file of an unpacked package.
    rdf : dict
        The description as read from YAML.
    description_name : str
        The description's file name inside the package.
    """

    path: Path
    rdf: dict[str, Any]
    description_name: str

    @property
    def name(self) -> str:
        """The model's name (the file's name when the description has none)."""
        return str(self.rdf.get("name") or self.path.stem)

    @property
    def format_version(self) -> str:
        """The bioimage.io format version of the description."""
        return str(self.rdf.get("format_version"))

    @cached_property
    def own(self) -> dict[str, Any] | None:
        """What napari-unet stored under ``config.napari_unet``; None for other tools' packages."""
        config = self.rdf.get("config")
        block = config.get(CONFIG_KEY) if isinstance(config, dict) else None
        return block if isinstance(block, dict) else None

    def read(self, name: str, *, sha256: str | None = None) -> bytes:
        """Return the bytes of a file the description names, checking its hash when given.

        Raises
        ------
        InputError
            For a file at a URL, one missing from the package, or one whose
            SHA-256 differs from the description's.
        """
        name = str(name)
        if "://" in name:
            raise InputError(f"{self.path}: {name} is not in the package but at a URL; "
                             "napari-unet reads packages whose files are all inside (the "
                             "zip file the model zoo offers for download)")
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise InputError(f"{self.path}: {name} lies outside the package")
        try:
            if self.path.suffix.lower() in (".yaml", ".yml"):
                data = (self.path.parent / relative).read_bytes()
            else:
                with zipfile.ZipFile(self.path) as archive:
                    data = archive.read(str(relative))
        except (KeyError, FileNotFoundError):
            raise InputError(f"{self.path}: {name}, named in {self.description_name}, is "
                             "missing from the package") from None
        except (OSError, zipfile.BadZipFile) as err:
            raise InputError(f"{self.path}: cannot read {name} ({err})") from None
        if sha256 and hashlib.sha256(data).hexdigest() != str(sha256).lower():
            raise InputError(f"{self.path}: {name} does not match its SHA-256 in "
                             f"{self.description_name}: the package is damaged")
        return data


def open_package(path: str | os.PathLike) -> Package:
    """Read a package's description and check that it describes a model of a known format.

    Parameters
    ----------
    path : str or PathLike
        A zip file, or the ``rdf.yaml`` (or ``bioimageio.yaml``) of an unpacked package.

    Returns
    -------
    package : Package

    Raises
    ------
    InputError
        In one line: no such file, a damaged zip file, no description in it,
        unreadable YAML, a resource that is not a model, or a format version
        other than 0.4 and 0.5.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such bioimage.io package")
    if path.suffix.lower() in (".yaml", ".yml"):
        name, text = path.name, _read_text(path)
    else:
        name, text = _description_in_zip(path)
    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise InputError(f"{path}: {name} is not valid YAML ({problem})") from None
    if not isinstance(rdf, dict):
        raise InputError(f"{path}: {name} is not a bioimage.io description")
    kind = rdf.get("type")
    if kind != "model":
        what = f"a bioimage.io {kind} description" if kind else "no bioimage.io resource type"
        raise InputError(f"{path}: {what}, not a model")
    version = str(rdf.get("format_version"))
    if not version.startswith(FORMAT_VERSIONS):
        raise InputError(f"{path}: bioimage.io model format version {version} is not "
                         "supported; napari-unet reads 0.4 and 0.5")
    return Package(path, rdf, name)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read ({err})") from None


def _description_in_zip(path: Path) -> tuple[str, str]:
    """Return the name and text of the description of a zipped package."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if is_description_name(n)]
            if not names:
                raise InputError(f"{path}: a zip file without rdf.yaml, not a bioimage.io "
                                 "package")
            name = min(names, key=lambda n: (YAML_NAMES.index(_base(n)), n))
            return name, archive.read(name).decode("utf-8")
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: damaged zip file, not a readable bioimage.io package "
                         f"({err})") from None


def _base(name: str) -> str:
    return next(known for known in YAML_NAMES if name == known or name.endswith("." + known))


def load_package(path: str | os.PathLike, *,
                 map_location: str | torch.device = "cpu") -> ModelFile:
    """Read a package napari-unet wrote back into the model file it was written from.

    Parameters
    ----------
    path : str or PathLike
        A zip file, or the ``rdf.yaml`` of an unpacked package.
    map_location : str or torch.device
        Where the weights go.

    Returns
    -------
    model_file : ModelFile
        The configuration, normalisation, weights and history of the model
        exported (without what resuming its training would need).

    Raises
    ------
    InputError
        For what `open_package` refuses, a package of another tool, a newer
        napari-unet format, and missing, damaged or unreadable weights.
    """
    package = open_package(path)
    block = package.own
    if block is None:
        raise InputError(f"{package.path}: a bioimage.io model not written by napari-unet; "
                         "it can predict (napari-unet predict, the Prediction widget) but "
                         "not be trained further or exported")
    return own_model_file(package, map_location=map_location)


def own_model_file(package: Package, *,
                   map_location: str | torch.device = "cpu") -> ModelFile:
    """Return the `ModelFile` of a package napari-unet wrote (``package.own`` is set)."""
    path, block = package.path, package.own
    if not package.format_version.startswith("0.5."):
        raise InputError(f"{path}: napari-unet writes bioimage.io format 0.5, this package "
                         f"says {package.format_version}")
    version = block.get("version")
    if block.get("format") != FORMAT or not isinstance(version, int):
        raise InputError(f"{path}: damaged config.{CONFIG_KEY} in {package.description_name}")
    if version > VERSION:
        raise InputError(f"{path}: model format version {version} is newer than this "
                         f"napari-unet reads ({VERSION}); upgrade napari-unet-em")
    entry = (package.rdf.get("weights") or {}).get("pytorch_state_dict")
    if not isinstance(entry, dict) or not entry.get("source"):
        raise InputError(f"{path}: no pytorch_state_dict weights in {package.description_name}")
    data = package.read(entry["source"], sha256=entry.get("sha256"))
    try:
        state_dict = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path}: refused {entry['source']}: it holds Python objects that "
                         "could run code when loaded") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise InputError(f"{path}: unreadable weights {entry['source']} ({err})") from None
    try:
        return ModelFile(
            config=Config.from_dict(block["config"]),
            normalization=Normalization(**{k: float(v)
                                           for k, v in block["normalization"].items()}),
            state_dict=dict(state_dict),
            history=list(block.get("history") or []),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: damaged config.{CONFIG_KEY} in {package.description_name} "
                         f"(missing {err})") from None


def require_bioimageio(what: str):
    """Import bioimageio.spec and bioimageio.core, or say in one line how to install them.

    Parameters
    ----------
    what : str
        What needs them, for the message (``'writing a bioimage.io package'``).

    Returns
    -------
    core : module
        ``bioimageio.core``.
    """
    try:
        import bioimageio.core as core
        import bioimageio.spec  # noqa: F401
    except ImportError:
        raise InputError(f"{what} needs bioimageio.core: {EXTRA}") from None
    return core


def first_error(summary) -> str:
    """Return the first error of a bioimageio validation summary, as one line."""
    for detail in summary.details:
        for error in detail.errors:
            where = ".".join(str(part) for part in error.loc)
            text = " ".join(str(error.msg).split())
            return f"{detail.name}: {where + ': ' if where else ''}{text}"
        if detail.status == "failed":
            return detail.name
    return f"status {summary.status}"
