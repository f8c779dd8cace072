"""The napari layer: dock widgets that drive the core. Qt and napari live only here."""

from .data import DataWidget

__all__ = ["DataWidget"]
