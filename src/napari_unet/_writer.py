"""napari writers: Labels as a mask TIFF (255 = membrane) or cell labels; probabilities.

An Image layer is written as float32 probabilities, or as the uncertainty map when the
Prediction widget made it.

napari reads a ValueError from a writer as "wrong format" and hides its message,
so these raise OSError with the one-line reason instead. No file is ever replaced.
"""

from napari_unet.errors import InputError
from napari_unet.io.labels import label_values
from napari_unet.io.stacks import write_export

PREDICTED = "napari-unet-prediction"
"""Layer metadata key of the layers the Prediction widget writes; its value names the layer."""
CELLS = "cells"
UNCERTAINTY = "membrane uncertainty"


def _write(kind: str, path: str, data) -> list[str]:
    try:
        return [str(write_export(kind, path, data, overwrite=False))]
    except InputError as err:
        raise OSError(str(err)) from None


def is_cell_labels(data, meta: dict) -> bool:
    """Whether a Labels layer holds cell instances rather than annotation (0, 1, 2)."""
    if (meta.get("metadata") or {}).get(PREDICTED) == CELLS:
        return True
    return not set(label_values(data).tolist()) <= {0, 1, 2}


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write annotation labels as a mask TIFF, or cell labels as they are.

    Parameters
    ----------
    path : str
        Target ``.tif``/``.tiff`` file.
    data : (Y, X) or (Z, Y, X) ndarray
        Annotation labels (1 = membrane) or cell instance labels.
    meta : dict
        Layer attributes from napari; its metadata tells a cells layer.

    Returns
    -------
    paths : list of str
        The written file.

    Raises
    ------
    OSError
        When the file exists or cannot be written.
    """
    return _write("cells" if is_cell_labels(data, meta) else "mask", path, data)


def write_probabilities(path: str, data, meta: dict) -> list[str]:
    """Write an Image layer (membrane probabilities, or uncertainty) as a float32 TIFF.

    Parameters
    ----------
    path : str
    data : (Y, X) or (Z, Y, X) float ndarray
    meta : dict
        Layer attributes from napari; its metadata tells an uncertainty layer.

    Returns
    -------
    paths : list of str

    Raises
    ------
    OSError
        When the file exists, the data are not floats, or the write fails.
    """
    role = (meta.get("metadata") or {}).get(PREDICTED)
    return _write("uncertainty" if role == UNCERTAINTY else "probabilities", path, data)
