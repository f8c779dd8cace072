"""Reading and writing TIFF files: images, labels in either convention, masks.

Writes are atomic (a temporary file in the target folder, then a rename) and
never replace an existing file unless asked, so a failed or refused write
leaves whatever was there untouched.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.checks import check_image
from napari_unet.errors import InputError
from napari_unet.io.labels import (
    MaskConvention,
    export_mask,
    label_values,
    mask_to_annotation,
    to_annotation,
)

# Key under which exported masks record their convention in the TIFF description.
MASK_KEY = "napari_unet_mask"
# Key under which other exports record what they hold ('probabilities', 'cells').
KIND_KEY = "napari_unet_kind"


def read_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF file into memory, failing with a one-line message.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    array : ndarray
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return tifffile.imread(path)
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise InputError(f"{path}: not a readable TIFF file ({err})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a (Y, X) or (Z, Y, X) single-channel image from a TIFF file.

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    image : (Y, X) or (Z, Y, X) ndarray
        The stored dtype, unchanged.
    """
    return check_image(read_tiff(path), name=str(path))


def tiff_metadata(path: str | os.PathLike) -> dict:
    """Return the JSON metadata of a TIFF's description ({} when there is none)."""
    with tifffile.TiffFile(path) as tif:
        description = tif.pages.first.description
    try:
        meta = json.loads(description)
    except (json.JSONDecodeError, TypeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def mask_convention_of(path: str | os.PathLike) -> MaskConvention | None:
    """Return the convention recorded in a mask file written by `write_mask`, or None."""
    return tiff_metadata(path).get(MASK_KEY)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label file as annotation labels (0 = not annotated, 1 = membrane, 2 = interior).

    A mask exported by this package is read back in the convention it recorded;
    any other file may be in the annotation or the ISBI convention (DESIGN.md).

    Parameters
    ----------
    path : str or PathLike

    Returns
    -------
    labels : (Y, X) or (Z, Y, X) uint8 ndarray

    Raises
    ------
    InputError
        When the file is missing or unreadable or its values fit no convention.
    """
    data = read_tiff(path)
    try:
        convention = mask_convention_of(path)
        labels = (
            mask_to_annotation(data, convention=convention)
            if convention
            else to_annotation(data)
        )
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    return check_image(labels, name=str(path))


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    overwrite: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Write an array to a zlib-compressed TIFF, atomically.

    Parameters
    ----------
    path : str or PathLike
        Target file; its folder must exist.
    data : (Y, X) or (Z, Y, X) ndarray
    overwrite : bool
        Replace an existing file. Without it an existing file is an error.
    metadata : dict, optional
        Extra JSON-serialisable entries for the TIFF description; the axes are
        always recorded.

    Returns
    -------
    path : Path
        The written file.

    Raises
    ------
    InputError
        When the file exists (and ``overwrite`` is false), the folder is missing,
        or the write fails (a full disk, say); nothing is left behind then.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; choose another name or allow overwriting")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such folder")
    axes = "ZYX"[-data.ndim:] if data.ndim <= 3 else None
    meta = {"axes": axes, **(metadata or {})}
    return atomic_write(path, lambda tmp: tifffile.imwrite(
        tmp, data, metadata=meta, compression="zlib", photometric="minisblack"))


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> str | None:
    """Say how two paths share data: ``'is'``, ``'is inside'``, ``'holds'``, or None.

    Links are followed, so a path and a symbolic link to it, or two hard links
    to one file, are the same; a folder (a zarr array, say) holds what lies in it.

    Parameters
    ----------
    a, b : str or PathLike

    Returns
    -------
    relation : str or None
        ``'is'`` when they name the same file or folder, ``'is inside'`` when ``a``
        lies in the folder ``b``, ``'holds'`` when ``b`` lies in the folder ``a``.
    """
    a, b = Path(a).expanduser(), Path(b).expanduser()
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):
            return "is"
    except OSError:
        pass
    a, b = a.resolve(), b.resolve()
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "holds"
    return None


def check_not_inputs(outputs: dict[str, os.PathLike], inputs: dict[str, os.PathLike]) -> None:
    """Refuse outputs that would write over an input or over each other.

    Overwriting permission never covers this: an input is never replaced.

    Parameters
    ----------
    outputs, inputs : dict of str to path
        How messages name each path (``'-o'``, ``'the image'``) and the path.

    Raises
    ------
    InputError
        Naming the first output that is, holds or lies inside an input, or two
        outputs that are the same file.
    """
    for out_name, out in outputs.items():
        for in_name, source in inputs.items():
            relation = overlap(out, source)
            if relation:
                shown = "" if str(out) == str(source) else f" {source}"
                raise InputError(f"{out_name} {out} {relation} {in_name}{shown}: an input is "
                                 "never replaced, even when overwriting is allowed; choose "
                                 "another name")
    names = list(outputs)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if overlap(outputs[first], outputs[second]):
                raise InputError(f"{first} and {second} both name {outputs[first]}; give each "
                                 "output its own name")


def atomic_write(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``.

    The file gets the permissions of any new file (the umask's), not the private
    ones of a temporary file. If writing fails (a full disk, say) the temporary
    file is removed and ``path`` keeps its old content.

    Parameters
    ----------
    path : Path
        Target file; its folder must exist.
    write : callable
        Writes the content to the path it is given.

    Returns
    -------
    path : Path
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"could not write {path}: {err.strerror or err}") from None
    return path


def write_mask(
    path: str | os.PathLike,
    labels: np.ndarray,
    *,
    convention: MaskConvention = "membrane",
    overwrite: bool = False,
) -> Path:
    """Export annotation labels as a mask TIFF (DESIGN.md "Exported mask TIFF").

    Parameters
    ----------
    path : str or PathLike
    labels : (Y, X) or (Z, Y, X) ndarray
        Annotation labels; 1 = membrane.
    convention : {'membrane', 'isbi'}
        ``'membrane'``: 255 = membrane, 0 = not membrane. ``'isbi'``: 0 = membrane,
        255 = interior.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    path : Path
    """
    mask = export_mask(labels, convention=convention)
    return write_tiff(path, mask, overwrite=overwrite, metadata={MASK_KEY: convention})


EXPORTS = ("mask", "probabilities", "uncertainty", "cells")
"""What `export_paths` and `write_export` know: the membrane mask, P(membrane), the
uncertainty map, cell labels."""


def export_paths(folder: str | os.PathLike, name: str, kinds, *,
                 overwrite: bool = False) -> dict[str, Path]:
    """Name the TIFF files of an export (``NAME_mask.tif``, ...) and check them all first.

    Parameters
    ----------
    folder : str or PathLike
        An existing folder.
    name : str
        Common file name prefix.
    kinds : iterable of {'mask', 'probabilities', 'cells'}
    overwrite : bool
        Allow replacing existing files.

    Returns
    -------
    paths : dict
        ``{kind: path}``.

    Raises
    ------
    InputError
        For a missing folder, an empty or path-like name, an unknown kind, or
        (without ``overwrite``) files that exist: then nothing should be written.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    name = name.strip()
    if not name or "/" in name or "\\" in name:
        raise InputError(f"file name prefix must be a plain name, got {name!r}")
    unknown = sorted(set(kinds) - set(EXPORTS))
    if unknown:
        raise InputError(f"unknown export(s) {unknown}; known: {list(EXPORTS)}")
    paths = {kind: folder / f"{name}_{kind}.tif" for kind in EXPORTS if kind in set(kinds)}
    if not paths:
        raise InputError("nothing to export: choose a mask, probabilities or cells")
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{', '.join(existing)} exist(s) in {folder}: choose another name or "
                         "allow overwriting")
    return paths


def write_export(kind: str, path: str | os.PathLike, data: np.ndarray, *,
                 convention: MaskConvention = "membrane", overwrite: bool = False) -> Path:
    """Write one export: a mask TIFF, float32 probabilities or uncertainty, or cell labels.

    Parameters
    ----------
    kind : {'mask', 'probabilities', 'uncertainty', 'cells'}
    path : str or PathLike
    data : (Y, X) or (Z, Y, X) ndarray
        Annotation labels (mask), P(membrane) in [0, 1], or instance labels.
    convention : {'membrane', 'isbi'}
        Of the mask (see `write_mask`).
    overwrite : bool

    Returns
    -------
    path : Path
    """
    if kind == "mask":
        return write_mask(path, check_export(kind, data), convention=convention,
                          overwrite=overwrite)
    return write_tiff(path, check_export(kind, data), overwrite=overwrite,
                      metadata={KIND_KEY: kind})


def check_export(kind: str, data: np.ndarray) -> np.ndarray:
    """Check an export's array and give it its file dtype (before any file is written).

    Parameters
    ----------
    kind : {'mask', 'probabilities', 'uncertainty', 'cells'}
    data : ndarray

    Returns
    -------
    data : ndarray
        Annotation labels (mask), float32 probabilities or uncertainty, or cell labels in the
        smallest unsigned dtype that holds them.

    Raises
    ------
    InputError
        Naming what is wrong: a mask that is not annotation labels, probabilities
        that are not floats, negative or non-integer cells, or an unknown kind.
    """
    data = np.asarray(data)
    if kind == "mask":
        if not set(label_values(data).tolist()) <= {0, 1, 2}:
            raise InputError("the mask must hold annotation labels (1 = membrane, 2 = interior)")
        return data
    if kind in ("probabilities", "uncertainty"):
        if not np.issubdtype(data.dtype, np.floating):
            raise InputError(f"{kind} must be floats in [0, 1], got {data.dtype}")
        return data.astype(np.float32, copy=False)
    if kind == "cells":
        return cell_label_array(data)
    raise InputError(f"unknown export {kind!r}; known: {list(EXPORTS)}")


def cell_label_array(labels: np.ndarray) -> np.ndarray:
    """Cell instance labels in the smallest unsigned dtype that holds them (0 = background).

    uint8 up to 255 cells, uint16 up to 65535, else uint32 (uint64 beyond).
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise InputError(f"cell labels must be non-negative integers, got {labels.dtype}")
    top = int(labels.max()) if labels.size else 0
    dtype = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                 if top <= np.iinfo(t).max)
    return labels.astype(dtype, copy=False)
