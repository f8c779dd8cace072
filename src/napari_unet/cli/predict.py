"""The command line's ``predict`` job: masks, probabilities and cells as TIFF (or zarr)."""

import argparse
import contextlib
import functools
import time
from pathlib import Path

from napari_unet.errors import InputError

FLAGS = {"mask": "-o", "probabilities": "--probabilities", "uncertainty": "--uncertainty",
         "cells": "--cells", "ranking": "--ranking"}
ARRAYS = ("mask", "probabilities", "uncertainty", "cells")
"""The outputs written as TIFF (or zarr); the ranking is a CSV table."""


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    """Check the files to write before any work, so that a mistake writes nothing.

    No output may be an input (the image or the model), even with
    ``--overwrite``, nor may two outputs share a name.
    """
    from napari_unet.io.stacks import check_not_inputs
    from napari_unet.model.files import model_path

    outputs = {"mask": args.output, "probabilities": args.probabilities,
               "uncertainty": args.uncertainty, "cells": args.cells, "ranking": args.ranking}
    outputs = {kind: Path(path) for kind, path in outputs.items() if path}
    check_not_inputs({FLAGS[kind]: path for kind, path in outputs.items()},
                     {"the input image": Path(args.images),
                      "the model": model_path(args.model)})
    for kind, path in outputs.items():
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: no such folder (for the {kind})")
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} exists; use --overwrite to replace it")
        if kind == "ranking":
            if path.suffix.lower() != ".csv":
                raise InputError(f"{path}: --ranking writes a .csv table")
        elif path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
            raise InputError(f"{path}: write .tif, .tiff or .zarr")
    zarr_outputs = {kind for kind, path in outputs.items() if path.suffix.lower() == ".zarr"}
    if zarr_outputs and zarr_outputs != set(outputs) - {"ranking"}:
        raise InputError("write either all outputs as .zarr (large volumes) or none")
    if "cells" in zarr_outputs:
        raise InputError("--cells is written as TIFF only; cell labels of a large volume are "
                         "not supported yet")
    return outputs


def _is_large(args: argparse.Namespace, outputs: dict[str, Path]) -> bool:
    """Whether to predict blockwise: zarr input or output, or a cluster."""
    zarr_io = Path(args.images).suffix.lower() == ".zarr" or any(
        p.suffix.lower() == ".zarr" for p in outputs.values())
    return zarr_io or args.scheduler is not None


def _client(scheduler: str | None):
    """Connect to the cluster of ``--scheduler`` (None: run locally, without a cluster)."""
    if scheduler is None:
        return None
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install "
                         "'napari-unet-em[distributed]'") from None
    if scheduler == "local":
        return Client(LocalCluster(threads_per_worker=1))
    try:
        return Client(scheduler, timeout=30)
    except OSError as err:
        raise InputError(f"--scheduler {scheduler}: no scheduler answers ({err})") from None


@contextlib.contextmanager
def step(text: str):
    """Say what runs now (``text ...``) and, once done, how long it took."""
    start = time.monotonic()
    print(f"{text} ...", end="", flush=True)
    try:
        yield
    except BaseException:
        print(flush=True)  # end the line before any message
        raise
    print(f" {time.monotonic() - start:.1f} s", flush=True)


def _drain(job, unit: str, steps: dict[str, str] | None = None):
    """Drain a prediction job: a bar of its tiles (or blocks), then its post-processing steps.

    ``steps`` says how to announce each `~napari_unet.prediction.pipeline.PostProgress`
    step; each is shown as a timed `step`.
    """
    from napari_unet.cli.common import progress_bar
    from napari_unet.jobs import drain
    from napari_unet.prediction.pipeline import PostProgress

    bar, timed = None, contextlib.ExitStack()

    def show(progress) -> None:
        nonlocal bar
        if isinstance(progress, PostProgress):
            if bar is not None:
                bar.close()
            timed.close()  # the step before: its time
            timed.enter_context(step(steps[progress.step]))
            return
        bar = bar or progress_bar(progress.total, unit)
        bar.update(progress.done - bar.n)

    with timed:
        try:
            return drain(job, show)
        finally:
            if bar is not None:
                bar.close()


def _tile(args: argparse.Namespace, model_file) -> int:
    """Return the tile to ask prediction for; say in one line when it rounds ``--tile``."""
    from napari_unet.cli.common import tile_notice
    from napari_unet.prediction.foreign import ForeignModel
    from napari_unet.prediction.pipeline import model_tile
    from napari_unet.prediction.tiles import TilePlan

    tile = args.tile or model_tile(model_file)
    if isinstance(model_file, ForeignModel):  # the package's sides decide
        return tile
    network = model_file.config.model
    used = TilePlan.for_prediction(network, tile).output
    if args.tile is not None and used != args.tile:
        tile_notice(args.tile, used, network.depth, network.padding)
    return tile


def mask_settings(args: argparse.Namespace, model_file) -> tuple[float, float | None]:
    """Return the threshold and gap closing of the mask: the flags', else the model's."""
    from napari_unet.cli.common import OFF

    threshold = model_file.threshold if args.threshold is None else args.threshold
    if args.close_gaps is None:
        return threshold, model_file.close_gaps
    return threshold, None if args.close_gaps == OFF else args.close_gaps


def run_large(args: argparse.Namespace, outputs: dict[str, Path]) -> int:
    """Predict a volume larger than memory, block by block, into zarr arrays."""
    import shutil
    import tempfile

    from napari_unet.cli.common import describe_mask
    from napari_unet.devices import autocast_dtype, pick_device
    from napari_unet.model.files import ModelFile
    from napari_unet.prediction.pipeline import open_model, volume_job
    from napari_unet.prediction.volume import publish, threshold_volume

    model_file = open_model(args.model)
    if not isinstance(model_file, ModelFile):
        raise InputError(f"{args.model}: a bioimage.io package of another tool predicts images "
                         "in memory only; large volumes (zarr, --scheduler) need a napari-unet "
                         "model")
    device = pick_device(args.device)
    mask = outputs["mask"]
    if mask.suffix.lower() != ".zarr":
        raise InputError("large volumes (zarr input or --scheduler) are written as .zarr")
    try:
        block = tuple(int(v) for v in args.block.split(","))
    except ValueError:
        raise InputError(f"--block takes three integers Z,Y,X, got {args.block!r}") from None
    tile = _tile(args, model_file)
    scratch = Path(tempfile.mkdtemp(prefix=".napari-unet.", dir=mask.parent))
    probabilities = outputs.get("probabilities", scratch / "probabilities.zarr")
    client = None
    try:
        client = _client(args.scheduler)
        job = volume_job(args.model, args.images, probabilities, device=device, tile=tile,
                         batch_size=args.batch_size, block=block,
                         autocast_dtype=autocast_dtype(device), tta=args.tta, client=client,
                         overwrite=args.overwrite)
        _drain(job, "block")
        threshold, close_gaps = mask_settings(args, model_file)
        staged = scratch / mask.name
        with step(f"computing the mask ({describe_mask(threshold, close_gaps)})"):
            threshold_volume(probabilities, staged, threshold=threshold, close_gaps=close_gaps,
                             convention="isbi" if args.isbi else "membrane")
        _uncertainty_outputs(outputs, probabilities, threshold)
        with step(f"writing the mask to {mask}"):
            publish(staged, mask)  # last: --overwrite was checked before any work
    finally:
        if client is not None:
            client.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print("wrote " + ", ".join(str(path) for path in outputs.values()))
    return 0


def _uncertainty_outputs(outputs: dict[str, Path], probabilities: Path,
                         threshold: float) -> None:
    """Write a large volume's uncertainty (zarr) and ranking (CSV), when asked for.

    The map is the margin measure (a volume keeps no spread of test-time-augmented
    predictions). It is built in a hidden folder beside its output and moved into
    place whole, before the ranking is written; with ``--ranking`` alone the slices
    are ranked from the map computed on the fly, nothing written.
    """
    if "uncertainty" not in outputs and "ranking" not in outputs:
        return
    import shutil
    import tempfile

    import dask.array as da

    from napari_unet.prediction.uncertainty import lazy_uncertainty, rank_slices
    from napari_unet.prediction.volume import publish, uncertainty_volume

    target = outputs.get("uncertainty")
    if target is None:
        lazy = lazy_uncertainty(da.from_zarr(str(probabilities)), threshold=threshold)
        ranking = _drain(rank_slices(lazy), "slice")
    else:
        staging = Path(tempfile.mkdtemp(prefix=".napari-unet.", dir=target.parent))
        try:
            staged = staging / "uncertainty.zarr"
            with step("computing the uncertainty"):
                uncertainty_volume(probabilities, staged, threshold=threshold)
            ranking = _drain(rank_slices(da.from_zarr(str(staged))), "slice") \
                if "ranking" in outputs else None
            publish(staged, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if "ranking" in outputs:
        with step(f"writing the ranking to {outputs['ranking']}"):
            ranking.write_csv(outputs["ranking"])


def run_predict(args: argparse.Namespace) -> int:
    """``napari-unet predict``: predict a stack and write its mask (and more)."""
    from napari_unet.checks import check_slice_side
    from napari_unet.cli.common import describe_mask
    from napari_unet.devices import autocast_dtype, pick_device
    from napari_unet.io.stacks import read_image, write_export
    from napari_unet.model.files import ModelFile
    from napari_unet.prediction.pipeline import image_job, open_model

    outputs = _outputs(args)
    if _is_large(args, outputs):
        return run_large(args, outputs)
    model_file = open_model(args.model, channel=args.channel)
    if args.tta and not isinstance(model_file, ModelFile):
        raise InputError("--tta works with napari-unet models only, not with a bioimage.io "
                         "package of another tool")
    image = read_image(args.images)
    check_slice_side(image.shape, to="predict", name=f"{args.images}: slices")
    device = pick_device(args.device)
    threshold, close_gaps = mask_settings(args, model_file)
    job = image_job(model_file, image, threshold=threshold, close_gaps=close_gaps,
                    min_size=args.min_cell_size if "cells" in outputs else None,
                    device=device, tile=_tile(args, model_file),
                    batch_size=args.batch_size, autocast_dtype=autocast_dtype(device),
                    tta=args.tta, uncertainty=bool({"uncertainty", "ranking"} & set(outputs)))
    result = _drain(job, "tile", {
        "mask": f"computing the mask ({describe_mask(threshold, close_gaps)})",
        "uncertainty": "ranking the slices by uncertainty",
        "cells": "labelling cells (watershed of the probabilities)"})
    write = functools.partial(write_export, convention="isbi" if args.isbi else "membrane",
                              overwrite=args.overwrite)
    with step(f"writing the mask to {outputs['mask']}"):
        write("mask", outputs["mask"], result.mask)
    if "probabilities" in outputs:
        with step(f"writing the probabilities to {outputs['probabilities']}"):
            write("probabilities", outputs["probabilities"], result.probabilities)
    if "uncertainty" in outputs:
        with step(f"writing the uncertainty to {outputs['uncertainty']}"):
            write("uncertainty", outputs["uncertainty"], result.uncertainty)
    if "cells" in outputs:
        with step(f"writing the cells to {outputs['cells']}"):
            write("cells", outputs["cells"], result.cells)
    if "ranking" in outputs:
        with step(f"writing the ranking to {outputs['ranking']}"):
            result.ranking.write_csv(outputs["ranking"])
    print("wrote " + ", ".join(str(path) for path in outputs.values()))
    return 0


def add_predict(jobs) -> None:
    """Register the predict subcommand."""
    from napari_unet.cli.common import close_gaps_arg

    parser = jobs.add_parser(
        "predict", help="predict membranes of a stack with a trained model",
        description="Predict membrane probabilities by overlap-tiling and write the mask "
        "(uint8, 255 = membrane, 0 = not membrane; --isbi: 0 = membrane, 255 = interior).",
    )
    parser.add_argument("model", help="model file from napari-unet train, a bioimage.io "
                        "package (.zip or rdf.yaml; other tools' 2D single-channel models run "
                        "through bioimageio.core), or isbi2012 (the bundled ISBI 2012 model)")
    parser.add_argument("images", help="TIFF image or .zarr array, (Y, X) or (Z, Y, X)")
    parser.add_argument("-o", "--output", required=True, metavar="MASK.tif",
                        help="mask file: .tif, or .zarr for large volumes")
    parser.add_argument("--probabilities", metavar="PROB.tif", help="also write P(membrane)")
    parser.add_argument("--cells", metavar="CELLS.tif", help="also write cell instance labels")
    parser.add_argument("--uncertainty", metavar="UNC.tif",
                        help="also write the uncertainty map in [0, 1] (.tif, or .zarr for "
                        "large volumes): near the threshold (or, with --tta and in memory, "
                        "where the 8 predictions disagree), weighted towards the crests between "
                        "cells, and far from any membrane")
    parser.add_argument("--ranking", metavar="RANKING.csv",
                        help="also write the slices ranked by uncertainty, least sure first, "
                        "with the centre of each slice's least sure 128-pixel square")
    parser.add_argument("--tile", type=int, help="output tile side (default: the model's); "
                        "rounded to a size the network can use, with a notice")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--threshold", type=float,
                        help="membrane above it (default: the model's, chosen at validation)")
    parser.add_argument("--close-gaps", type=close_gaps_arg, metavar="LEVEL|off",
                        help="also mark the watershed lines between the cells seeded where "
                        "P(membrane) <= LEVEL, closing faint gaps (default: the model's)")
    parser.add_argument("--min-cell-size", type=int, default=30,
                        help="smallest cell in pixels (30)")
    parser.add_argument("--channel", type=int, metavar="N",
                        help="for a bioimage.io package of another tool: the output channel "
                        "that is P(membrane), when its channel names do not say")
    parser.add_argument("--tta", action="store_true",
                        help="average over the 8 flips and rotations (8x slower)")
    parser.add_argument("--isbi", action="store_true", help="write the ISBI convention")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (never an input: the image or the model)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run blocks on a dask.distributed cluster: its scheduler address, "
                        "or 'local' for a LocalCluster on this machine")
    parser.add_argument("--block", default="1,1024,1024", metavar="Z,Y,X",
                        help="block (and zarr chunk) size for large volumes (1,1024,1024)")
    parser.set_defaults(run=run_predict)
