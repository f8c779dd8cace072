import numpy as np

from napari_unet._sample_data import isbi2012_sample
from napari_unet.io.sample import ISBI2012, isbi2012


def test_isbi2012_shapes_and_values():
    image, labels = isbi2012()
    assert image.shape == labels.shape == (30, 512, 512)
    assert image.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels)) == {1, 2}
    membrane = (labels == 1).mean()
    assert 0.21 < membrane < 0.23  # the data README: 21.96% membrane
    # Membranes are dark in ssTEM.
    assert image[labels == 1].mean() < image[labels == 2].mean()


def test_sample_is_bundled_not_read_from_shared():
    assert "site-packages" in str(ISBI2012) or "src/napari_unet" in str(ISBI2012)
    assert "shared" not in str(ISBI2012)


def test_sample_layers():
    (image, image_meta, image_kind), (labels, labels_meta, labels_kind) = isbi2012_sample()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.shape == labels.shape == (30, 512, 512)
    assert labels.dtype == np.uint8
    assert image_meta["name"] == "ISBI 2012 EM"
    assert labels_meta["name"] == "ISBI 2012 labels"
