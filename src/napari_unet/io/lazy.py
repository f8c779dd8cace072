"""Opening images lazily: dask arrays, zarr arrays and folders, TIFF files page by page.

`open_lazy` turns any of these sources into a dask array whose reads touch
only the chunks asked for, and checks its shape and dtype without reading its
pixels. A TIFF file is read through tifffile's zarr store (`LazyTiff`), which
pickles as its path, so dask workers on other machines reopen it themselves.
"""

import os
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_unet.checks import check_dtype, check_image_shape
from napari_unet.errors import InputError

READ_CHUNK = 1024
"""Y/X side of the dask chunks through which TIFF files and numpy arrays are read."""

TIFF_SUFFIXES = (".tif", ".tiff")


def open_lazy(source, *, name: str | None = None) -> da.Array:
    """Open an image lazily and check it as `~napari_unet.checks.check_image` does.

    Only the shape and dtype are checked (`~napari_unet.checks.check_dtype`,
    `~napari_unet.checks.check_image_shape`): looking for NaN or inf values would
    read the whole volume, so that check is left out (such pixels give NaN
    probabilities in their tiles).

    Parameters
    ----------
    source : dask array, zarr array, ndarray, str or PathLike
        A path names a zarr array folder (``.zarr``) or a TIFF file (read page
        by page and tile by tile, never whole).
    name : str, optional
        How messages name the image; the path by default.

    Returns
    -------
    volume : (Y, X) or (Z, Y, X) dask array
        Reading it reads only the chunks asked for.

    Raises
    ------
    InputError
        For a missing or unreadable path, a zarr group, or an image that is
        RGB(A), empty, not numeric or not 2D/3D.
    """
    if isinstance(source, str | os.PathLike):
        name = name or str(source)
        volume = _open_path(Path(source))
    elif isinstance(source, da.Array):
        volume = source
    elif isinstance(source, zarr.Array):
        volume = da.from_zarr(source)
    elif isinstance(source, np.ndarray):
        volume = da.from_array(source, chunks=_read_chunks(source.shape))
    else:
        raise TypeError(f"cannot read an image from a {type(source).__name__}")
    check_dtype(volume.dtype, name=name or "image")
    check_image_shape(volume.shape, name=name or "image")
    return volume


def _open_path(path: Path) -> da.Array:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in TIFF_SUFFIXES:
        tiff = LazyTiff(path.resolve())  # workers may run elsewhere
        token = dask.base.tokenize(str(path.resolve()), path.stat().st_mtime_ns)
        return da.from_array(tiff, chunks=_read_chunks(tiff.shape), name=f"tiff-{token}",
                             lock=True, meta=np.empty((0,) * tiff.ndim, tiff.dtype))
    if not path.is_dir():
        raise InputError(f"{path}: not a zarr folder or a TIFF file")
    try:
        node = zarr.open(str(path.resolve()), mode="r")
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"{path}: not a zarr array ({err})") from None
    if isinstance(node, zarr.Group):
        keys = ", ".join(sorted(node.array_keys())) or "none"
        raise InputError(f"{path} is a zarr group; name one of its arrays ({keys}), "
                         f"e.g. {path / '0'}")
    return da.from_zarr(node)


def _read_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of one slice by READ_CHUNK pixels (the last two axes), whatever the rank."""
    return tuple(min(READ_CHUNK, n) if axis >= len(shape) - 2 else 1
                 for axis, n in enumerate(shape))


class LazyTiff:
    """A TIFF file's first series, read on demand through tifffile's zarr store.

    Pickling keeps only the path, so dask can send it to worker processes,
    which reopen the file there.

    Parameters
    ----------
    path : str or PathLike
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._array = None
        array = self._open()
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def _open(self) -> zarr.Array:
        if self._array is None:
            try:
                store = tifffile.imread(self.path, aszarr=True, series=0, level=0)
                self._array = zarr.open_array(store, mode="r")
            except (tifffile.TiffFileError, ValueError, OSError) as err:
                raise InputError(f"{self.path}: not a readable TIFF file ({err})") from None
        return self._array

    def __getitem__(self, key) -> np.ndarray:
        return self._open()[key]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}
