"""Save a Labels layer as an exported-mask TIFF (255 = membrane, 0 = not membrane)."""

from .errors import InputError
from .io import write_mask


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write annotation labels as a mask TIFF; an existing file is never replaced.

    Parameters
    ----------
    path : str
        Target ``.tif``/``.tiff`` file.
    data : (Y, X) or (Z, Y, X) ndarray
        Annotation labels (1 = membrane).
    meta : dict
        Layer attributes from napari (unused).

    Returns
    -------
    paths : list of str
        The written file.

    Raises
    ------
    OSError
        When the file exists or cannot be written. (napari reads a ValueError
        from a writer as "wrong format" and would hide the message.)
    """
    try:
        return [str(write_mask(path, data, overwrite=False))]
    except InputError as err:
        raise OSError(str(err)) from None
