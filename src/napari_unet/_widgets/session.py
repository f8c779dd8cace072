"""What the widgets of one viewer share: the current model, the previews' settings, corrections.

The current model is the one a run just trained, or the one the user loaded; the
Prediction and Correct-and-retrain widgets follow it. The weight map and
augmentation settings tuned in the previews are the ones Training uses.
Corrected slices live in the mask layer's metadata, so that they travel with the
layer: the Prediction widget never overwrites them and Retrain trains on them. So does
the ranking of the slices by uncertainty that Prediction leaves there for "correct next".
"""

import weakref
from pathlib import Path

from psygnal import Signal

from napari_unet.config import Config, config_for_preset
from napari_unet.training.augment_config import AugmentConfig
from napari_unet.training.weights import WeightConfig

CORRECTED = "napari-unet-corrected"
"""Mask layer metadata key: sorted list of the slices corrected by hand."""
RANKING = "napari-unet-ranking"
"""Mask layer metadata key: the `~napari_unet.prediction.uncertainty.Ranking` of its slices."""


class Session:
    """The state one viewer's widgets share.

    Attributes
    ----------
    model : Path or None
        The current model file.
    model_changed : Signal
        Emitted with the new path when the current model changes.
    ranking_changed : Signal
        Emitted with the mask layer whose ranking by uncertainty changed (`set_ranking`).
    weights : WeightConfig
        The weight map settings of the Weight map preview.
    augment : AugmentConfig
        The augmentation settings of the Augmentation preview.
    settings_changed : Signal
        Emitted when ``weights`` or ``augment`` change (through `set_settings`).
    """

    model_changed = Signal(Path)
    settings_changed = Signal()
    ranking_changed = Signal(object)

    def __init__(self):
        self.model: Path | None = None
        preset = config_for_preset("auto")
        self.weights: WeightConfig = preset.weights
        self.augment: AugmentConfig = preset.augment

    def set_settings(self, *, weights: WeightConfig | None = None,
                     augment: AugmentConfig | None = None) -> None:
        """Change the weight map or augmentation settings that training will use."""
        new = (weights or self.weights, augment or self.augment)
        if new != (self.weights, self.augment):
            self.weights, self.augment = new
            self.settings_changed.emit()

    def training_base(self) -> Config:
        """Return the settings Training takes from the previews (its form sets the rest)."""
        return Config(weights=self.weights, augment=self.augment)

    def set_ranking(self, layer, ranking) -> None:
        """Leave a mask layer's ranking by uncertainty in its metadata; say so."""
        layer.metadata[RANKING] = ranking
        self.ranking_changed.emit(layer)

    def set_model(self, path) -> None:
        """Make ``path`` the current model (widgets following it load it)."""
        path = Path(path)
        if path != self.model:
            self.model = path
            self.model_changed.emit(path)


_SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def session(viewer) -> Session:
    """Return the `Session` of a viewer (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


def corrected_slices(layer) -> list[int]:
    """Return the slices of a mask layer marked as corrected by hand."""
    return list(layer.metadata.get(CORRECTED, [])) if layer is not None else []


def set_corrected_slices(layer, slices) -> list[int]:
    """Mark the slices of a mask layer corrected by hand; return them sorted."""
    layer.metadata[CORRECTED] = sorted({int(z) for z in slices})
    return layer.metadata[CORRECTED]


def slice_ranking(layer):
    """Return the ranking by uncertainty of a mask layer's slices (None: not predicted)."""
    return layer.metadata.get(RANKING) if layer is not None else None


def painted_slices(atoms, ndim: int) -> set[int]:
    """Return the slices a napari Labels ``paint`` event touched.

    Parameters
    ----------
    atoms : list
        The event's value: napari's undo atoms, either ``(indices, old, new)``
        with fancy indices, or masked atoms with a ``slice_key`` bounding box.
    ndim : int
        The layer's dimensions: a 2D layer has the one slice 0.
    """
    if ndim == 2:
        return {0}
    slices = set()
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            first = key[0]
            slices.update(range(first.start or 0, first.stop))
        else:
            slices.update(int(z) for z in set(atom[0][0].tolist()))
    return slices
