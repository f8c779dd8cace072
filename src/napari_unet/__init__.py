"""U-Net (Ronneberger et al. 2015) for EM membrane segmentation.

The package core has no GUI imports: ``import napari_unet`` never loads napari or
Qt. The network and the weight map are loaded on first use, so importing the
package stays cheap for the napari reader, writer and sample-data hooks.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "UNet": "napari_unet.model.unet",
    "weight_map": "napari_unet.training.weights",
}

__all__ = ["UNet", "__version__", "weight_map"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
