"""Stop a widget's background job when the widget goes away."""

from qtpy.QtCore import QEvent


class StopsWhenClosed:
    """Mixin for a QWidget with a ``stop()``: stop the job when closed or undocked.

    napari removes a dock widget by unparenting it, so a parent change to None
    counts as closing; closing napari closes the widget. A stopped training
    job saves its last model.
    """

    def event(self, event) -> bool:
        """Stop the job when napari removes this dock widget."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop()
        return super().event(event)

    def closeEvent(self, event) -> None:
        """Stop the job when the widget closes."""
        self.stop()
        super().closeEvent(event)
