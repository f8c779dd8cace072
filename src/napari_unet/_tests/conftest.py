import sys

import numpy as np
import pytest

from napari_unet.config import Config
from napari_unet.io.sample import isbi2012


@pytest.fixture(scope="session")
def isbi_small():
    """Four 128x128 crops of the ISBI 2012 training data (image, annotation labels)."""
    image, labels = isbi2012()
    crop = (slice(0, 4), slice(0, 128), slice(0, 128))
    return np.ascontiguousarray(image[crop]), np.ascontiguousarray(labels[crop])


@pytest.fixture
def tiffs(isbi_small, tmp_path):
    """tmp_path with the `isbi_small` crops as TIFF: img.tif and isbi.tif (0/255 labels)."""
    import tifffile

    image, labels = isbi_small
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "isbi.tif", np.where(labels == 1, 0, 255).astype(np.uint8),
                     photometric="minisblack")
    return tmp_path


@pytest.fixture
def tiny_config():
    """A tiny network and short epochs: a run takes about a second on a CPU."""
    return Config().replace(
        model={"depth": 3, "base_channels": 4},
        train={"tile": 64, "epochs": 2, "samples_per_epoch": 4, "batch_size": 2,
               "val_slices": (3,), "device": "cpu", "patience": None},
    )


@pytest.fixture
def model_path(tmp_path, tiny_config):
    """An untrained tiny model file whose history sets the threshold to 0.42."""
    import torch

    from napari_unet.model.files import ModelFile, make_model, save_model
    from napari_unet.model.normalization import Normalization

    torch.manual_seed(0)
    model_file = ModelFile(tiny_config, Normalization(0.0, 255.0, 0.5, 0.2),
                           make_model(tiny_config).state_dict(),
                           history=[{"epoch": 1, "threshold": 0.42}])
    return save_model(tmp_path / "m.pt", model_file)


@pytest.fixture(autouse=True)
def no_first_look(request, monkeypatch):
    """Widget tests start their own predictions: the Prediction widget's first look with
    the bundled model is off, except in tests named for it (``first_look``)."""
    module = sys.modules.get("napari_unet._widgets.prediction")  # imported by widget tests
    if module is not None and "first_look" not in request.node.name:
        monkeypatch.setattr(module.PredictionWidget, "first_look", False)
