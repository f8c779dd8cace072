"""Prediction of volumes larger than memory: lazy input, blockwise overlap-tile, zarr output.

The volume is read lazily (a dask array, a zarr array or folder, or a TIFF
file read page by page) and cut into blocks of ``k`` slices by a Y/X chunk.
For each block only the window its tiles need is read: the block grown by the
tile margin in Y and X, mirrored at the volume's borders with
`~napari_unet.training.samples.mirror_indices` exactly as `~napari_unet.prediction.predict.predict`
mirrors a whole slice. The probabilities of a block go straight into its own
chunk of a float32 zarr array, so memory holds a few blocks at most and
concurrent writers never share a chunk.

Tile origins are aligned to multiples of ``2**(depth - 1)`` in volume
coordinates. A U-Net's 2x2 poolings and up-convolutions make a tile's output
depend on where its input starts modulo that step, so aligned tiles give every
pixel the same result whatever the block and tile sizes (exactly, for a
valid-padding network; to within the tile context for a same-padding one): the
same result as `predict`, which aligns its tiles the same way, on the whole slice.

The output is built in a hidden folder next to ``output_path`` and renamed into
place when every block is written: a failed or interrupted run leaves any
earlier output untouched.

Several machines
----------------
Given a ``distributed.Client``, blocks run as tasks on the cluster's workers:
each worker reads its window from the source, loads the model once per process
(cached by path) and writes its block to the zarr store itself; the client
receives block numbers only. The model file, the source and the output folder
must therefore be reachable by the same paths from every worker (a shared file
system). On a SLURM cluster, with ``dask-jobqueue`` installed::

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    from napari_unet.jobs import drain
    from napari_unet.prediction.volume import predict_volume

    cluster = SLURMCluster(cores=8, processes=1, memory="32GB", walltime="02:00:00",
                           job_extra_directives=["--gres=gpu:1"])
    cluster.scale(jobs=4)  # four SLURM jobs, one worker process each
    with Client(cluster) as client:
        drain(predict_volume("model.pt", "/shared/volume.zarr", "/shared/membranes.zarr",
                             device="cuda", client=client))

One worker process per GPU (``processes=1`` per job) keeps one model per GPU;
on CPU nodes several worker processes per job with one thread each, and
``OMP_NUM_THREADS`` set to the cores per process, avoid oversubscription.
"""

import functools
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import tifffile
import torch
import zarr

from napari_unet.checks import check_dtype, check_image_shape, check_positive
from napari_unet.errors import InputError
from napari_unet.io.stacks import overlap
from napari_unet.model.files import load_model
from napari_unet.model.files import model_path as checkpoint_path
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.postprocess import lazy_membrane
from napari_unet.prediction.predict import predict_tiles
from napari_unet.prediction.tiles import TilePlan, mirror_indices

DEFAULT_BLOCK = (1, 1024, 1024)
"""Slices, rows and columns of a block (and of an output chunk)."""

READ_CHUNK = 1024
"""Y/X side of the dask chunks through which TIFF files and numpy arrays are read."""

TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class VolumeProgress:
    """Blocks predicted so far, of how many."""

    done: int
    total: int


# -- lazy input ----------------------------------------------------------------------


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


# -- blocks and their tiles ---------------------------------------------------------


@dataclass(frozen=True)
class AxisTiles:
    """Output tiles covering ``start:stop`` of one axis, from an aligned origin.

    Attributes
    ----------
    start, stop : int
        The block's extent along the axis.
    first : int
        Origin of the first output tile (``start`` rounded down to the alignment).
    step : int
        Output pixels kept per tile (a multiple of the alignment).
    count : int
        Tiles.
    plan : TilePlan
        Network input side, output side and offset for ``step``.
    """

    start: int
    stop: int
    first: int
    step: int
    count: int
    plan: TilePlan

    @classmethod
    def cover(cls, start: int, stop: int, *, plan: TilePlan, model: UNet) -> "AxisTiles":
        """Cover ``start:stop`` with equal tiles of at most ``plan.output`` pixels on its grid."""
        first = start - start % plan.grid
        count = -(-(stop - first) // plan.output)
        step = _round_up(-(-(stop - first) // count), plan.grid)
        return cls(start, stop, first, step, count, TilePlan.for_prediction(model, step))

    def indices(self, length: int) -> np.ndarray:
        """Return the input pixels the tiles read, mirrored into an axis of ``length``."""
        span = (self.count - 1) * self.step + self.plan.input
        return mirror_indices(self.first - self.plan.halo, span, length)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Block:
    """Slices ``z0:z1`` by the extents of ``y`` and ``x`` of a (Z, Y, X) volume."""

    index: int
    z0: int
    z1: int
    y: AxisTiles
    x: AxisTiles
    height: int
    width: int

    def read(self) -> tuple[slice, slice, slice]:
        """Return the bounding box of the input pixels the block's tiles need."""
        rows, cols = self.y.indices(self.height), self.x.indices(self.width)
        return (slice(self.z0, self.z1), slice(int(rows.min()), int(rows.max()) + 1),
                slice(int(cols.min()), int(cols.max()) + 1))

    def window(self, raw: np.ndarray) -> np.ndarray:
        """Arrange the bounding box `read` returned into the mirrored window of the tiles."""
        rows, cols = self.y.indices(self.height), self.x.indices(self.width)
        return raw[:, rows - rows.min()][:, :, cols - cols.min()]

    def target(self) -> tuple[slice, slice, slice]:
        """Return where the block goes in the (Z, Y, X) output."""
        return (slice(self.z0, self.z1), slice(self.y.start, self.y.stop),
                slice(self.x.start, self.x.stop))


def plan_blocks(shape: tuple[int, int, int], block: tuple[int, int, int], model: UNet,
                *, tile: int) -> list[Block]:
    """Cut a (Z, Y, X) volume into blocks and plan each block's aligned tiles.

    Parameters
    ----------
    shape : (3,) tuple of int
    block : (3,) tuple of int
        Slices, rows and columns per block (smaller at the volume's far edges).
    model : UNet
    tile : int
        Output tile side to aim for (as in `predict`).

    Returns
    -------
    blocks : list of Block
    """
    plan = TilePlan.for_prediction(model, tile)
    depth, height, width = shape
    cover = functools.partial(AxisTiles.cover, plan=plan, model=model)
    rows = [cover(y, min(y + block[1], height)) for y in range(0, height, block[1])]
    cols = [cover(x, min(x + block[2], width)) for x in range(0, width, block[2])]
    spans = [(z, min(z + block[0], depth)) for z in range(0, depth, block[0])]
    grid = [(z, y, x) for z in spans for y in rows for x in cols]
    return [Block(i, z0, z1, y, x, height, width) for i, ((z0, z1), y, x) in enumerate(grid)]


# -- one block --------------------------------------------------------------------


@dataclass(frozen=True)
class BlockTask:
    """What a worker needs besides the block: small and picklable.

    Attributes
    ----------
    model_path : str
    model_stamp : int
        Modification time of the model file (ns), so a rewritten file is reloaded.
    output : str
        The zarr array the blocks are written to.
    squeeze : bool
        The output is (Y, X): drop the slice axis when writing.
    device : str
    batch_size : int
    autocast_dtype : torch.dtype or None
    tta : bool
    """

    model_path: str
    model_stamp: int
    output: str
    squeeze: bool
    device: str
    batch_size: int
    autocast_dtype: torch.dtype | None
    tta: bool


@functools.lru_cache(maxsize=2)
def _network(path: str, stamp: int, device: str) -> tuple[UNet, Normalization]:
    """Load a model file once per process (``stamp`` keys the cache to the file's version)."""
    model_file = load_model(path, map_location=device)
    return model_file.build_model().to(device), model_file.normalization


def predict_block(task: BlockTask, raw: np.ndarray, block: Block) -> int:
    """Predict one block from its raw input box and write it to the output.

    Parameters
    ----------
    task : BlockTask
    raw : (k, h, w) ndarray
        ``volume[block.read()]``.
    block : Block

    Returns
    -------
    index : int
        The block's number.
    """
    model, normalization = _network(task.model_path, task.model_stamp, task.device)
    unit = normalization.unit(block.window(np.asarray(raw)))
    probabilities = _predict_tiles(model, unit, normalization, block, task)
    if task.squeeze:
        zarr.open_array(task.output, mode="r+")[block.target()[1:]] = probabilities[0]
    else:
        zarr.open_array(task.output, mode="r+")[block.target()] = probabilities
    return block.index


def _predict_tiles(model: UNet, unit: np.ndarray, normalization: Normalization, block: Block,
                   task: BlockTask) -> np.ndarray:
    """P(membrane) of a block from its mirrored [0, 1] window, tile batch by tile batch."""
    y, x = block.y, block.x
    jobs = [(z, i, j) for z in range(len(unit)) for i in range(y.count) for j in range(x.count)]
    result = np.empty((len(unit), y.count * y.step, x.count * x.step), dtype=np.float32)
    for start in range(0, len(jobs), task.batch_size):
        batch = jobs[start:start + task.batch_size]
        tiles = np.stack([unit[z, i * y.step:i * y.step + y.plan.input,
                               j * x.step:j * x.step + x.plan.input] for z, i, j in batch])
        probs = predict_tiles(model, tiles, normalization, device=task.device,
                              autocast_dtype=task.autocast_dtype, tta=task.tta)
        oy, ox = y.plan.offset, x.plan.offset
        for (z, i, j), p in zip(batch, probs, strict=True):
            top, left = i * y.step, j * x.step
            result[z, top:top + y.step, left:left + x.step] = p[oy:oy + y.step, ox:ox + x.step]
    return result[:, y.start - y.first:y.stop - y.first, x.start - x.first:x.stop - x.first]


# -- the whole volume -------------------------------------------------------------


def predict_volume(
    model_file: str | os.PathLike,
    source,
    output_path: str | os.PathLike,
    *,
    tile: int = 388,
    batch_size: int = 4,
    block: tuple[int, int, int] = DEFAULT_BLOCK,
    device: str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    tta: bool = False,
    client=None,
    overwrite: bool = False,
) -> Generator[VolumeProgress, None, Path]:
    """Predict P(membrane) of a large volume block by block into a zarr array.

    Parameters
    ----------
    model_file : str or PathLike
        A model file (`~napari_unet.model.files.save_model`); its normalisation
        maps each window to [0, 1].
    source : dask array, zarr array, ndarray, str or PathLike
        (Y, X) or (Z, Y, X) image; see `open_lazy`.
    output_path : str or PathLike
        The zarr folder to write (conventionally ``.zarr``); its parent must exist.
    tile : int
        Output tile side to aim for (see `predict`).
    batch_size : int
        Tiles per forward pass.
    block : (3,) tuple of int
        Slices, rows and columns per block, and the output's chunks. Input
        chunks of about this size keep reads small.
    device : str
        Torch device of every block (of every worker, with ``client``).
    autocast_dtype : torch.dtype or None
        Mixed precision (bf16 on CUDA).
    tta : bool
        Average over the 8 flips and rotations of each tile.
    client : distributed.Client, optional
        Run the blocks on this cluster's workers; locally, one by one, without.
    overwrite : bool
        Replace an existing output (only once the new one is complete).

    Yields
    ------
    progress : VolumeProgress
        After every block.

    Returns
    -------
    path : Path
        The output: a float32 zarr array of the source's shape, values in [0, 1].

    Raises
    ------
    InputError
        For a bad source, model file or option, an output that exists (without
        ``overwrite``) or is the source, or a missing output folder.
    """
    _check_options(tile=tile, batch_size=batch_size, block=block)
    volume = open_lazy(source)
    output = _check_output(Path(output_path), source=source, overwrite=overwrite)
    model_path = checkpoint_path(model_file)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such model file")
    stamp, device = model_path.stat().st_mtime_ns, str(device)
    model, _ = _network(str(model_path.resolve()), stamp, device)
    stack = volume[None] if volume.ndim == 2 else volume
    blocks = plan_blocks(stack.shape, tuple(block), model, tile=tile)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        _create_output(staging, volume.shape, block, model_path)
        task = BlockTask(str(model_path.resolve()), stamp, str(staging), volume.ndim == 2,
                         device, batch_size, autocast_dtype, tta)
        run = _run_local if client is None else functools.partial(_run_distributed, client)
        for done in run(stack, task, blocks):
            yield VolumeProgress(done, len(blocks))
        publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _check_options(*, tile: int, batch_size: int, block) -> None:
    try:
        sides = [check_positive(side, name="block") for side in block]
    except InputError:
        sides = []
    if len(sides) != 3:
        raise InputError(f"block must be three positive integers (Z, Y, X), got {block!r}")
    check_positive(tile, name="tile")
    check_positive(batch_size, name="batch_size")


def _check_output(output: Path, *, source, overwrite: bool) -> Path:
    relation = overlap(output, source) if isinstance(source, str | os.PathLike) else None
    if relation:  # even with overwrite: an input is never replaced
        raise InputError(f"{output} {relation} the input {source}; choose another output")
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; choose another name or allow overwriting")
    if not output.parent.is_dir():
        raise InputError(f"{output.parent}: no such folder")
    return output


def _create_output(path: Path, shape: tuple[int, ...], block, model_path: Path) -> None:
    zarr.create_array(str(path), shape=shape, chunks=tuple(block)[-len(shape):],
                      dtype="float32", fill_value=0.0, overwrite=True,
                      attributes={"napari_unet": {"content": "P(membrane)",
                                                  "model": str(model_path)}})


def publish(staging: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Move a finished output (a file or a zarr folder) into place, replacing what was there.

    A folder cannot replace another in one step, so the old output is first
    renamed into a hidden folder beside it and deleted only once the new one is
    in place: a run killed in between leaves the old output in that hidden
    folder, never half of either.

    Parameters
    ----------
    staging : str or PathLike
        The complete new output, in the same folder (file system) as ``output``.
    output : str or PathLike

    Returns
    -------
    output : Path
    """
    staging, output = Path(staging), Path(output)
    if not (output.exists() or output.is_symlink()):
        os.replace(staging, output)
        return output
    aside = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
    os.replace(output, aside / output.name)
    try:
        os.replace(staging, output)
    except OSError:
        os.replace(aside / output.name, output)  # the old output back where it was
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    return output


def threshold_volume(probabilities: str | os.PathLike, output: str | os.PathLike, *,
                     threshold: float, close_gaps: float | None = None,
                     convention: str = "membrane") -> Path:
    """Write the exported mask (uint8) of a probability zarr array, block by block.

    Parameters
    ----------
    probabilities : str or PathLike
        A zarr array of P(membrane), e.g. from `predict_volume`.
    output : str or PathLike
        The zarr folder to write, with the same chunks; it must not exist.
    threshold : float
        Membrane above it.
    close_gaps : float or None
        Also the watershed lines between cells seeded at most this
        (`napari_unet.prediction.postprocess.gap_lines`); computed on whole slices.
    convention : {'membrane', 'isbi'}
        'membrane': 255 = membrane, 0 = not; 'isbi': 0 = membrane, 255 = interior.

    Returns
    -------
    path : Path
    """
    probs = da.from_zarr(str(probabilities))
    membrane, other = (255, 0) if convention == "membrane" else (0, 255)
    is_membrane = lazy_membrane(probs, threshold=threshold, close_gaps=close_gaps)
    mask = da.where(is_membrane, np.uint8(membrane), np.uint8(other)).astype(np.uint8)
    da.to_zarr(mask.rechunk(probs.chunks), str(output))
    zarr.open_array(str(output), mode="r+").attrs.update(
        {"napari_unet_mask": convention, "threshold": float(threshold),
         "close_gaps": close_gaps})
    return Path(output)


def _run_local(stack: da.Array, task: BlockTask, blocks: list[Block]) -> Iterator[int]:
    """Predict the blocks one after the other in this process; yield the count done."""
    for done, block in enumerate(blocks, start=1):
        raw = stack[block.read()].compute(scheduler="synchronous")
        predict_block(task, raw, block)
        yield done


def _run_distributed(client, stack: da.Array, task: BlockTask,
                     blocks: list[Block]) -> Iterator[int]:
    """Predict the blocks as tasks on a cluster, a few per worker thread at a time.

    Each task reads its own input box (the read is part of its graph) and
    writes its own chunk; the client only counts the block numbers coming back.
    Submitting as threads free up bounds the memory of the workers and of the
    scheduler whatever the number of blocks.
    """
    from distributed import as_completed

    def submit(block: Block):
        work = dask.delayed(predict_block, pure=False)(task, stack[block.read()], block)
        return client.compute(work)

    pending = iter(blocks)
    submitted = [submit(b) for b in _take(pending, _slots(client))]
    queue = as_completed(submitted)
    try:
        for done, future in enumerate(queue, start=1):
            future.result()  # re-raises a worker's error here
            yield done
            for b in _take(pending, _slots(client) - queue.count()):
                submitted.append(submit(b))
                queue.add(submitted[-1])
    finally:
        client.cancel(submitted)


def _slots(client) -> int:
    """Blocks to keep in flight: two per worker thread (workers may join late)."""
    return max(2, 2 * sum(client.nthreads().values()))


def _take(items: Iterator, count: int) -> list:
    return [item for _, item in zip(range(max(count, 0)), items, strict=False)]
