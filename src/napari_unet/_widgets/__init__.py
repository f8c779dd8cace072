"""The napari layer: dock widgets that drive the core. Qt and napari live only here."""

from .augment_preview import AugmentPreview
from .correct import CorrectWidget
from .data_widget import DataWidget
from .export import ExportWidget
from .prediction import PredictionWidget
from .training import TrainingWidget
from .weights_preview import WeightsPreview

__all__ = ["AugmentPreview", "CorrectWidget", "DataWidget", "ExportWidget", "PredictionWidget",
           "TrainingWidget", "WeightsPreview"]
