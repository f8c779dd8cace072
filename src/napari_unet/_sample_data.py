"""File > Open Sample > ISBI 2012 EM (30 slices)."""

from napari_unet.io.labels import LABEL_COLORS
from napari_unet.io.sample import isbi2012


def isbi2012_sample() -> list[tuple]:
    """Return the ISBI 2012 training volume and its annotation labels as layer data."""
    image, labels = isbi2012()
    return [
        (image, {"name": "ISBI 2012 EM"}, "image"),
        (labels, {"name": "ISBI 2012 labels", "opacity": 0.7, "colormap": LABEL_COLORS}, "labels"),
    ]
