"""The list of the slices of a mask corrected by hand, for the Correct-and-retrain widget.

The slices live in the mask layer's metadata (see `session`), so that they travel with the
layer; the list shows them, each item holding its slice number, and painting on the mask
adds the slice painted.
"""

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from napari_unet.errors import InputError

from .layers import current_slice
from .session import corrected_slices, painted_slices, set_corrected_slices

SLICE = Qt.ItemDataRole.UserRole
"""Item data role of a list item's slice number."""


class CorrectedSlices(QListWidget):
    """List the slices of the mask marked as corrected; painting a slice marks it.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose slice in view `add_current` marks.
    """

    changed = Signal()
    """Emitted when the list shows other slices or another mask."""

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._mask = None
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.setMaximumHeight(110)

    @property
    def mask(self):
        """The mask layer whose corrected slices are listed (None: none chosen)."""
        return self._mask

    @property
    def corrected(self) -> list[int]:
        """The slices of the mask marked as corrected."""
        return corrected_slices(self._mask)

    def set_mask(self, layer) -> None:
        """List the corrected slices of ``layer`` and follow its painting."""
        if self._mask is not None:
            self._mask.events.paint.disconnect(self._on_paint)
        self._mask = layer
        if layer is not None:
            layer.events.paint.connect(self._on_paint)
        self._show()

    def set_corrected(self, slices) -> None:
        """Mark exactly these slices of the mask as corrected."""
        if self._mask is None:
            raise InputError("choose the mask layer first (Prediction makes one)")
        set_corrected_slices(self._mask, slices)
        self._show()

    def add_current(self) -> None:
        """Mark the slice shown in the viewer as corrected."""
        layer = self._mask
        if layer is None:
            raise InputError("choose the mask layer first (Prediction makes one)")
        z = current_slice(layer, self._viewer.dims.point) if layer.ndim == 3 else 0
        self.set_corrected([*self.corrected, z])

    def remove_selected(self) -> None:
        """Unmark the slices selected in the list."""
        chosen = {item.data(SLICE) for item in self.selectedItems()}
        if self._mask is not None:
            self.set_corrected([z for z in self.corrected if z not in chosen])

    def _on_paint(self, event) -> None:
        painted = painted_slices(event.value, self._mask.ndim)
        if not painted <= set(self.corrected):  # most strokes fall on listed slices: no work
            self.set_corrected(set(self.corrected) | painted)

    def _show(self) -> None:
        self.clear()
        for z in self.corrected:
            item = QListWidgetItem(f"slice {z}")
            item.setData(SLICE, z)
            self.addItem(item)
        self.changed.emit()
