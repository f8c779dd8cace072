import numpy as np
import torch
import zarr

from napari_unet.jobs import drain
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.pipeline import PostProgress, prediction_job, volume_job
from napari_unet.prediction.postprocess import cell_labels, membrane_mask
from napari_unet.prediction.predict import PredictProgress, predict_probabilities

NORM = Normalization(low=0.0, high=1.0, mean=0.5, std=0.25)


def tiny():
    torch.manual_seed(0)
    return UNet(depth=3, base_channels=4).eval()


def test_prediction_job_predicts_then_post_processes():
    unit = np.random.default_rng(0).random((2, 40, 40), dtype=np.float32)
    seen = []
    result = drain(prediction_job(tiny(), unit, NORM, threshold=0.5, min_size=5, close_gaps=0.2,
                                  device=torch.device("cpu"), tile=20, batch_size=8),
                   seen.append)
    assert [type(p) for p in seen] == [PredictProgress, *[PostProgress] * 3]
    assert [p.step for p in seen[1:]] == ["mask", "uncertainty", "cells"]
    assert all(p.done == p.total for p in seen)
    expected = predict_probabilities(tiny(), unit, NORM, tile=20)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(
        result.mask, membrane_mask(result.probabilities, threshold=0.5, close_gaps=0.2))
    np.testing.assert_array_equal(
        result.cells, cell_labels(result.probabilities, threshold=0.5, min_size=5))


def test_prediction_job_without_cells():
    seen = []
    result = drain(prediction_job(tiny(), np.zeros((24, 24), np.float32), NORM, threshold=0.5,
                                  min_size=None, device=torch.device("cpu")), seen.append)
    assert result.cells is None and [p.step for p in seen[1:]] == ["mask", "uncertainty"]


def test_volume_job_writes_the_probabilities(model_path, tmp_path):
    unit = np.random.default_rng(1).random((1, 30, 30), dtype=np.float32)
    path = drain(volume_job(model_path, unit, tmp_path / "p.zarr", device=torch.device("cpu"),
                            tile=16))
    result = zarr.open_array(str(path))
    assert result.shape == (1, 30, 30) and result.dtype == np.float32
