"""Prediction of volumes larger than memory: lazy input, blockwise overlap-tile, zarr output.

The volume is read lazily (a dask array, a zarr array or folder, or a TIFF
file read page by page) and cut into blocks of ``k`` slices by a Y/X chunk.
For each block only the window its tiles need is read: the block grown by the
tile margin in Y and X, mirrored at the volume's borders with
`~napari_unet.prediction.tiles.mirror_indices` exactly as
`~napari_unet.prediction.predict.predict` mirrors a whole slice. The
probabilities of a block go straight into its own chunk of a float32 zarr
array, so memory holds a few blocks at most and concurrent writers never share
a chunk. The lazy reading is `napari_unet.io.lazy`, the blocks and their tiles
`napari_unet.prediction.blocks`.

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
import torch
import zarr

from napari_unet.checks import check_positive
from napari_unet.errors import InputError
from napari_unet.io.lazy import open_lazy
from napari_unet.io.stacks import KIND_KEY, overlap
from napari_unet.model.files import model_path as checkpoint_path
from napari_unet.prediction.blocks import (
    Block,
    BlockTask,
    cached_network,
    plan_blocks,
    predict_block,
)
from napari_unet.prediction.postprocess import lazy_membrane
from napari_unet.prediction.uncertainty import lazy_uncertainty

DEFAULT_BLOCK = (1, 1024, 1024)
"""Slices, rows and columns of a block (and of an output chunk)."""


@dataclass(frozen=True)
class VolumeProgress:
    """Blocks predicted so far, of how many."""

    done: int
    total: int


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
        (Y, X) or (Z, Y, X) image; see `~napari_unet.io.lazy.open_lazy`.
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
    model, _ = cached_network(str(model_path.resolve()), stamp, device)
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


def uncertainty_volume(probabilities: str | os.PathLike, output: str | os.PathLike, *,
                       threshold: float) -> Path:
    """Write the uncertainty map (float32) of a probability zarr array, whole slice by slice.

    The margin measure of `napari_unet.prediction.uncertainty.uncertainty_map` (a
    volume's test-time-augmented predictions keep no spread) with the stack's reach, in
    the chunks of the probabilities.

    Parameters
    ----------
    probabilities : str or PathLike
        A zarr array of P(membrane), e.g. from `predict_volume`.
    output : str or PathLike
        The zarr folder to write; it must not exist.
    threshold : float
        The mask's threshold.

    Returns
    -------
    path : Path
    """
    probs = da.from_zarr(str(probabilities))
    uncertainty = lazy_uncertainty(probs, threshold=threshold)
    da.to_zarr(uncertainty.rechunk(probs.chunks), str(output))
    zarr.open_array(str(output), mode="r+").attrs.update(
        {KIND_KEY: "uncertainty", "threshold": float(threshold)})
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
