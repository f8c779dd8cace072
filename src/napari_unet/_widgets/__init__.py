"""The napari layer: dock widgets that drive the core. Qt and napari live only here."""

from .augment_preview import AugmentPreview
from .data import DataWidget
from .prediction import PredictionWidget
from .training import TrainingWidget
from .weights_preview import WeightsPreview

__all__ = ["AugmentPreview", "DataWidget", "PredictionWidget", "TrainingWidget", "WeightsPreview"]
