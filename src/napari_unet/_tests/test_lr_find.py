import numpy as np
import pytest

import napari_unet.lr_find as lr_module
from napari_unet.lr_find import lr_find, suggest_lr
from napari_unet.train import drain


def test_recorded_rate_is_the_rate_used(isbi_small, tiny_config, monkeypatch):
    image, labels = isbi_small
    used = []
    real_update = lr_module.update

    def spy(setup, optimizer, batches):
        used.append(optimizer.param_groups[0]["lr"])
        return real_update(setup, optimizer, batches)

    monkeypatch.setattr(lr_module, "update", spy)
    sweep = lr_find(image, labels, tiny_config, start=1e-5, end=1e-1, steps=5)
    points = []
    while True:
        try:
            points.append(next(sweep))
        except StopIteration as stop:
            result = stop.value
            break
    assert [p.lr for p in points] == used == result.lrs
    np.testing.assert_allclose(result.lrs, np.geomspace(1e-5, 1e-1, 5))
    assert [p.step for p in points] == [1, 2, 3, 4, 5]


def test_stops_on_divergence(isbi_small, tiny_config):
    image, labels = isbi_small
    result = drain(lr_find(image, labels, tiny_config, start=1e-3, end=1e9, steps=60))
    assert result.diverged and len(result.lrs) < 60
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)


def test_smoothing_is_bias_corrected(isbi_small, tiny_config):
    image, labels = isbi_small
    result = drain(lr_find(image, labels, tiny_config, start=1e-6, end=1e-5, steps=3))
    assert result.smoothed[0] == pytest.approx(result.losses[0])


def test_suggestion_is_the_steepest_descent():
    lrs = np.geomspace(1e-5, 1, 11)
    smoothed = np.array([1.0, 1.0, 0.99, 0.9, 0.5, 0.3, 0.25, 0.24, 0.5, 2.0, 9.0])
    assert suggest_lr(lrs, smoothed) == pytest.approx(lrs[4])
    assert suggest_lr(lrs[:3], [3.0, 2.0, 1.0]) is not None
    assert suggest_lr(lrs, np.linspace(1, 9, 11)) is None
