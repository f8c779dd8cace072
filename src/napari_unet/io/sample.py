"""The bundled ISBI 2012 EM sample (Cardona et al. 2010; Arganda-Carreras et al. 2015)."""

from importlib.resources import files

import numpy as np

from napari_unet.io.stacks import read_image, read_labels

ISBI2012 = files("napari_unet") / "data" / "isbi2012"


def isbi2012() -> tuple[np.ndarray, np.ndarray]:
    """Load the ISBI 2012 training volume and its labels.

    Returns
    -------
    image : (30, 512, 512) uint8 ndarray
        Serial-section TEM of a Drosophila larva ventral nerve cord.
    labels : (30, 512, 512) uint8 ndarray
        Annotation labels: 1 = membrane, 2 = cell interior (converted from the
        challenge's 0 = membrane, 255 = interior).
    """
    image = read_image(ISBI2012 / "train-volume.tif")
    labels = read_labels(ISBI2012 / "train-labels.tif")
    return image, labels
