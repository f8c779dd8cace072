"""What the widgets of one viewer share: the current model, and which mask slices were corrected.

The current model is the one a run just trained, or the one the user loaded; the
Prediction and Correct-and-retrain widgets follow it. Corrected slices live in
the mask layer's metadata, so that they travel with the layer: the Prediction
widget never overwrites them and Retrain trains on them.
"""

import weakref
from pathlib import Path

from psygnal import Signal

CORRECTED = "napari-unet-corrected"
"""Mask layer metadata key: sorted list of the slices corrected by hand."""


class Session:
    """The state one viewer's widgets share.

    Attributes
    ----------
    model : Path or None
        The current model file.
    model_changed : Signal
        Emitted with the new path when the current model changes.
    """

    model_changed = Signal(Path)

    def __init__(self):
        self.model: Path | None = None

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
