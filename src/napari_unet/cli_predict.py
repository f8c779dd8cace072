"""The command line's ``predict`` job: masks, probabilities and cells as TIFF (or zarr)."""

import argparse
from pathlib import Path

from .errors import InputError


def _outputs(args: argparse.Namespace) -> dict[str, Path]:
    """Check the files to write before any work, so that a mistake writes nothing."""
    outputs = {"mask": args.output, "probabilities": args.probabilities, "cells": args.cells}
    outputs = {kind: Path(path) for kind, path in outputs.items() if path}
    for kind, path in outputs.items():
        if not path.parent.is_dir():
            raise InputError(f"{path.parent}: no such folder (for the {kind})")
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} exists; use --overwrite to replace it")
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise InputError(f"{path}: write .tif or .tiff files")
    return outputs


def run_predict(args: argparse.Namespace) -> int:
    """``napari-unet predict``: predict a stack and write its mask (and more)."""
    from .checkpoint import load_model
    from .cli_jobs import progress_bar
    from .devices import autocast_dtype, pick_device
    from .io import read_image, write_mask, write_tiff
    from .postprocess import cell_labels, membrane_mask
    from .predict import predict

    outputs = _outputs(args)
    model_file = load_model(args.model)
    image = read_image(args.images)
    if min(image.shape[-2:]) < 8:
        raise InputError(f"{args.images}: slices of {image.shape[-2:]} are too small to predict")
    device = pick_device(args.device)
    model = model_file.build_model().to(device)
    job = predict(model, model_file.normalization.unit(image), model_file.normalization,
                  tile=args.tile or model_file.config.train.tile, batch_size=args.batch_size,
                  device=device, autocast_dtype=autocast_dtype(device), tta=args.tta)
    bar = None
    while True:
        try:
            progress = next(job)
        except StopIteration as stop:
            probabilities = stop.value
            break
        bar = bar or progress_bar(progress.total, "tile")
        bar.update(progress.done - bar.n)
    if bar is not None:
        bar.close()
    convention = "isbi" if args.isbi else "membrane"
    threshold = model_file.threshold if args.threshold is None else args.threshold
    write_mask(outputs["mask"], membrane_mask(probabilities, threshold=threshold),
               convention=convention, overwrite=args.overwrite)
    if "probabilities" in outputs:
        write_tiff(outputs["probabilities"], probabilities, overwrite=args.overwrite)
    if "cells" in outputs:
        cells = cell_labels(probabilities, threshold=threshold, min_size=args.min_cell_size)
        write_tiff(outputs["cells"], cells, overwrite=args.overwrite)
    print("wrote " + ", ".join(str(path) for path in outputs.values()))
    return 0


def add_predict(jobs) -> None:
    """Register the predict subcommand."""
    parser = jobs.add_parser(
        "predict", help="predict membranes of a stack with a trained model",
        description="Predict membrane probabilities by overlap-tiling and write the mask "
        "(uint8, 255 = membrane, 0 = not membrane; --isbi: 0 = membrane, 255 = interior).",
    )
    parser.add_argument("model", help="model file from napari-unet train")
    parser.add_argument("images", help="TIFF image, (Y, X) or (Z, Y, X)")
    parser.add_argument("-o", "--output", required=True, metavar="MASK.tif", help="mask file")
    parser.add_argument("--probabilities", metavar="PROB.tif", help="also write P(membrane)")
    parser.add_argument("--cells", metavar="CELLS.tif", help="also write cell instance labels")
    parser.add_argument("--tile", type=int, help="output tile side (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--threshold", type=float,
                        help="membrane above it (default: the model's, chosen at validation)")
    parser.add_argument("--min-cell-size", type=int, default=30,
                        help="smallest cell in pixels (30)")
    parser.add_argument("--tta", action="store_true",
                        help="average over the 8 flips and rotations (8x slower)")
    parser.add_argument("--isbi", action="store_true", help="write the ISBI convention")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(run=run_predict)
