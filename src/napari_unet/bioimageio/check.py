"""bioimageio.core's own model test (what ``bioimageio test`` runs), reduced to one line.

The test loads the package, checks its files against their hashes, reproduces
the test output from the test input with each weight format (within the
package's tolerance) and runs each format on the input sizes the package
declares. For a package napari-unet wrote it needs no network: every file is
inside the zip, and its description names no URL and no GitHub user (the only
things bioimageio.spec looks up online).
"""

import os
from pathlib import Path

from napari_unet.model.package import first_error, require_bioimageio


class PackageCheckError(RuntimeError):
    """A package failed bioimageio.core's test; the message is its first error, in one line."""


def check_package(path: str | os.PathLike, *, weight_format: str | None = None):
    """Run bioimageio.core's test of a model package on the CPU; raise unless it passes.

    Parameters
    ----------
    path : str or PathLike
        The package (zip).
    weight_format : {'pytorch_state_dict', 'torchscript'}, optional
        Test one weight format; None: every format in the package.

    Returns
    -------
    summary : bioimageio.spec.ValidationSummary
        Its ``status`` is ``'passed'``.

    Raises
    ------
    PackageCheckError
        Naming the first failed check.
    """
    core = require_bioimageio("testing a bioimage.io package")
    summary = core.test_model(str(Path(path)), weight_format=weight_format, devices=["cpu"])
    if summary.status != "passed":
        raise PackageCheckError(f"{path}: bioimageio.core's test failed: {first_error(summary)}")
    return summary
