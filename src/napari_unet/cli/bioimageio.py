"""The command line's ``export-bioimageio`` job: a model as a bioimage.io package."""

import argparse
from pathlib import Path


def run_export(args: argparse.Namespace) -> int:
    """``napari-unet export-bioimageio``: write a model as a bioimage.io model package."""
    import contextlib

    from napari_unet.bioimageio.export import ExportSettings, export_job
    from napari_unet.cli.predict import step
    from napari_unet.jobs import drain

    settings = ExportSettings(
        name=args.name, authors=tuple(args.authors or ()), description=args.description,
        license=args.license, tags=tuple(args.tags or ()),
        documentation=None if args.documentation is None else Path(args.documentation))
    timed = contextlib.ExitStack()

    def show(progress) -> None:
        timed.close()  # the step before: its time
        timed.enter_context(step(progress.step))

    with timed:
        path = drain(export_job(args.model, args.output, settings, overwrite=args.overwrite,
                                check=not args.no_check), show)
    checked = "" if args.no_check else "; it passed bioimageio.core's test"
    print(f"wrote {path} (bioimage.io model, pytorch_state_dict and torchscript weights{checked})")
    return 0


def add_export(jobs) -> None:
    """Register the export-bioimageio subcommand."""
    from napari_unet.bioimageio import DEFAULT_LICENSE, DEFAULT_TAGS

    parser = jobs.add_parser(
        "export-bioimageio", help="write a model as a bioimage.io model package (zip)",
        description="Write a model as a bioimage.io model package (format 0.5): weights as "
        "pytorch_state_dict and torchscript, the normalisation as preprocessing, test tensors "
        "from the ISBI 2012 sample, a cover and a README with the validation scores. "
        "Fiji/deepImageJ, ilastik, QuPath and napari plugins read it; napari-unet reads it "
        "back as the same model. Needs pip install \"napari-unet-em[bioimageio]\".",
    )
    parser.add_argument("model", help="model file from napari-unet train, or isbi2012 (the "
                        "bundled ISBI 2012 model)")
    parser.add_argument("-o", "--output", required=True, metavar="NAME.zip",
                        help="the package to write")
    parser.add_argument("--name", help="the model's name: 5 to 128 letters, digits, spaces "
                        "and _+-() (default: napari-unet and the model file's name)")
    parser.add_argument("--authors", nargs="+", metavar="NAME",
                        help="who made the model, one name each")
    parser.add_argument("--description", help="one or two sentences on the model")
    parser.add_argument("--license", default=DEFAULT_LICENSE,
                        help=f"an SPDX license identifier ({DEFAULT_LICENSE})")
    parser.add_argument("--tags", nargs="+", metavar="TAG",
                        help=f"tags added to {', '.join(DEFAULT_TAGS)}")
    parser.add_argument("--documentation", metavar="README.md",
                        help="a Markdown file to open the package's documentation; the model "
                        "card (training settings, validation scores, citations) follows it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing package (never an input)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip bioimageio.core's test of the package before it is written")
    parser.set_defaults(run=run_export)
