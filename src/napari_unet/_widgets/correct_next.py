"""The "correct next" list of Correct and retrain: the slices the model is least sure of first.

Prediction leaves the ranking of a mask's slices by uncertainty in the mask layer's
metadata (`napari_unet.prediction.uncertainty.Ranking`, see `session`). The list shows the
slices in that order with their scores; a slice marked as corrected (painting marks it)
is shown as done. "Next" jumps the viewer to the next slice not yet corrected and centres
the view on the slice's least sure square; double-clicking a slice jumps to it.
"""

from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from napari_unet.errors import InputError

from .corrected import SLICE
from .layers import camera, current_slice
from .session import corrected_slices, slice_ranking

DONE = QColor("#7f8a93")
"""Text colour of a slice already corrected."""


class CorrectNext(QListWidget):
    """The slices of a mask ranked by uncertainty, least sure first; jumps the viewer to them.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer, parent=None):
        super().__init__(parent)
        self._viewer = viewer
        self._mask = None
        self._visited: int | None = None  # the slice Next or a double-click went to last
        self.setMaximumHeight(130)
        self.setToolTip("slices ranked by the mean uncertainty of the prediction (Prediction's "
                        "'membrane uncertainty' layer): correcting the top ones pays most. "
                        "Double-click to go to a slice.")
        self.itemDoubleClicked.connect(lambda item: self.go_to(item.data(SLICE)))

    @property
    def mask(self):
        """The mask layer whose slices are ranked (None: none chosen)."""
        return self._mask

    def set_mask(self, layer) -> None:
        """List the ranking of ``layer``'s slices (none: an empty list)."""
        self._mask = layer
        self.refresh()

    @property
    def order(self) -> list[int]:
        """The ranked slices, least sure first (empty when the mask has no ranking)."""
        ranking = slice_ranking(self._mask)
        return ranking.order() if ranking is not None else []

    def pending(self) -> list[int]:
        """Return the ranked slices not corrected yet, least sure first."""
        done = set(corrected_slices(self._mask))
        return [z for z in self.order if z not in done]

    def refresh(self) -> None:
        """Show the ranking again (after a prediction, or a slice marked as corrected)."""
        self.clear()
        ranking = slice_ranking(self._mask)
        if ranking is None:
            return
        done = set(corrected_slices(self._mask))
        for place, z in enumerate(ranking.order(), start=1):
            text = f"{place}. slice {z}   {ranking.slices[z]:.3f}"
            item = QListWidgetItem(text + ("   ✓ corrected" if z in done else ""))
            item.setData(SLICE, z)
            if z in done:
                item.setForeground(QBrush(DONE))
            self.addItem(item)

    def next_slice(self) -> int | None:
        """Return the next slice to correct: the first one not corrected, in ranking order.

        Counted from the slice this list last went to while it is still in view (so
        that a slice left as it is is skipped), from the top otherwise; None when
        every ranked slice is corrected.
        """
        order, pending = self.order, set(self.pending())
        if not pending:
            return None
        here = self._slice_in_view()
        start = order.index(here) + 1 if here == self._visited and here in order else 0
        return next(z for z in order[start:] + order[:start] if z in pending)

    def go_next(self) -> int:
        """Jump to `next_slice`; return it."""
        if slice_ranking(self._mask) is None:
            raise InputError("no ranking yet: predict the stack first (Prediction ranks its "
                             "slices by uncertainty)")
        z = self.next_slice()
        if z is None:
            raise InputError("every ranked slice is marked as corrected: retrain, or predict "
                             "again for a new ranking")
        self.go_to(z)
        return z

    def go_to(self, z: int) -> None:
        """Show slice ``z`` and centre the view on its least sure square."""
        layer, ranking = self._mask, slice_ranking(self._mask)
        y, x = ranking.hotspot(z)
        world = layer.data_to_world((z, y, x) if layer.ndim == 3 else (y, x))
        offset = self._viewer.dims.ndim - layer.ndim
        if layer.ndim == 3:
            self._viewer.dims.set_point(offset, world[0])
        camera(self._viewer).center = tuple(world[-2:])
        self._visited = z
        for row in range(self.count()):
            if self.item(row).data(SLICE) == z:
                self.setCurrentRow(row)

    def _slice_in_view(self) -> int:
        layer = self._mask
        return current_slice(layer, self._viewer.dims.point) if layer.ndim == 3 else 0
