"""Stop a widget's background job when the widget goes away."""

import weakref

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


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


class _RemovalWatcher(QObject):
    """Call back once when the watched widget loses its parent (napari removed its dock)."""

    def __init__(self, widget: QWidget, callback):
        super().__init__(widget)
        self._callback = weakref.WeakMethod(callback)  # no cycle through the widget
        widget.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        """Call back on a parent change to None; let every event through."""
        callback = self._callback()
        if event.type() == QEvent.Type.ParentChange and watched.parent() is None and callback:
            callback()
        return False


def on_removal(widget: QWidget, callback) -> None:
    """Call ``callback()`` when napari removes the dock widget holding ``widget``.

    napari's close button unparents the widget rather than deleting it, so
    ``destroyed`` alone comes too late or never; it still covers napari closing.
    ``callback`` must be a bound method (taking ``*args``): Qt then holds its
    object weakly and skips the call once the object is being collected.
    """
    _RemovalWatcher(widget, callback)
    widget.destroyed.connect(callback)
