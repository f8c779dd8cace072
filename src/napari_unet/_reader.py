"""Open TIFF files: label files in either convention become annotation Labels layers.

Any other TIFF opens as an Image layer, so this reader can be the default for
``*.tif`` without changing how images look.
"""

from pathlib import Path

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.labels import LABEL_COLORS, label_convention
from napari_unet.io.stacks import KIND_KEY, read_labels, read_tiff, tiff_metadata

SUFFIXES = (".tif", ".tiff")


def get_reader(path):
    """Return `read_tiff_layer` for one TIFF path, else None (npe2 reader hook)."""
    if isinstance(path, list | tuple) or not str(path).lower().endswith(SUFFIXES):
        return None
    return read_tiff_layer


def looks_like_labels(data: np.ndarray) -> bool:
    """Tell whether an array holds label values (annotation or ISBI convention)."""
    if not np.issubdtype(data.dtype, np.integer):
        return False
    try:
        # The first slice rejects an EM image cheaply, before the whole volume.
        label_convention(data[0] if data.ndim == 3 else data)
        label_convention(data)
    except InputError:
        return False
    return True


def read_tiff_layer(path) -> list[tuple]:
    """Read a TIFF file as an Image layer or, for label files, an annotation Labels layer."""
    path = Path(path)
    data = read_tiff(path)
    if tiff_metadata(path).get(KIND_KEY) == "cells":  # cell labels exported by the plugin
        return [(data, {"name": path.stem}, "labels")]
    if looks_like_labels(data):
        return [(read_labels(path), {"name": path.stem, "colormap": LABEL_COLORS}, "labels")]
    return [(data, {"name": path.stem}, "image")]
