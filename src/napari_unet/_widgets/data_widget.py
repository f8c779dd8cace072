"""Data widget: pick the EM image and its labels; see whether they can train."""

import napari
from magicgui.widgets import Container, Label

from napari_unet.io.labels import describe_pair

from .layers import layer_picker, pick_first


class DataWidget(Container):
    """Choose the image and labels layers and show a one-line check of the pair.

    Labels may be a Labels layer or an Image layer holding label values, in
    either convention of DESIGN.md.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = viewer
        self.image_layer = layer_picker(viewer, "image", napari.layers.Image)
        self.labels_layer = layer_picker(viewer, "labels", napari.layers.Labels,
                                         napari.layers.Image, nullable=True)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        super().__init__(widgets=[self.image_layer, self.labels_layer, self.status])
        self.reset_choices()
        self._pick_defaults()
        self.image_layer.changed.connect(self._update_status)
        self.labels_layer.changed.connect(self._update_status)
        self._update_status()

    def _pick_defaults(self):
        pick_first(self.labels_layer, lambda layer: isinstance(layer, napari.layers.Labels))

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
