"""Data widget: pick the EM image and its labels; see whether they can train."""

import napari
from magicgui.widgets import ComboBox, Container, Label

from ..labels import describe_pair


def _layers_of(viewer, *kinds):
    return lambda _widget: [layer for layer in viewer.layers if isinstance(layer, kinds)]


class DataWidget(Container):
    """Choose the image and labels layers and show a one-line check of the pair.

    Labels may be a Labels layer or an Image layer holding label values, in
    either convention of DESIGN.md.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.image_layer = ComboBox(label="image", choices=_layers_of(viewer, napari.layers.Image))
        self.labels_layer = ComboBox(
            label="labels",
            choices=_layers_of(viewer, napari.layers.Labels, napari.layers.Image),
            nullable=True,
        )
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[self.image_layer, self.labels_layer, self.status])
        self.reset_choices()
        self._pick_defaults()
        self.image_layer.changed.connect(self._update_status)
        self.labels_layer.changed.connect(self._update_status)
        self._update_status()

    def _pick_defaults(self):
        labels = [ly for ly in self.labels_layer.choices if isinstance(ly, napari.layers.Labels)]
        if labels and self.labels_layer.value is None:
            self.labels_layer.value = labels[0]

    def reset_choices(self, *_):
        """Refresh the layer lists (napari calls this when layers change)."""
        super().reset_choices()
        if hasattr(self, "status"):
            self._pick_defaults()
            self._update_status()

    def _update_status(self, *_):
        image, labels = self.image_layer.value, self.labels_layer.value
        if image is None:
            self.status.value = "open an EM image (File > Open, or File > Open Sample)"
            return
        self.status.value = describe_pair(image.data, None if labels is None else labels.data)
