import numpy as np
import pytest

import napari_unet.training.lr_find as lr_module
from napari_unet.jobs import drain
from napari_unet.training.lr_find import lr_find, suggest_lr


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
    result = drain(sweep, points.append)
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


def test_suggestion_skips_a_flat_noisy_start():
    # Flat at 0.7 with noise up to 1e-3, then a steady fall to 0.1 at 1e-1, then divergence:
    # a noisy step in the flat part must not be taken for the descent.
    rng = np.random.default_rng(0)
    lrs = np.geomspace(1e-6, 1, 60)
    fall = np.clip(np.log10(lrs / 1e-3) / 2, 0, 1)
    smoothed = 0.7 - 0.6 * fall + np.where(lrs < 1e-3, 0.03 * rng.standard_normal(60), 0)
    smoothed[50:] = np.linspace(0.1, 3, 10)
    suggestion = suggest_lr(lrs, smoothed)
    assert 1e-3 <= suggestion <= 1e-1


def test_no_suggestion_when_the_loss_never_falls():
    lrs = np.geomspace(1e-6, 1, 30)
    assert suggest_lr(lrs, np.full(30, 0.7)) is None
    assert suggest_lr(lrs, np.linspace(0.7, 5, 30)) is None


@pytest.mark.slow
def test_suggestion_on_the_sample_lies_where_the_loss_falls(isbi_small):
    from napari_unet.config import config_for_preset

    image, labels = isbi_small
    config = config_for_preset("cpu", device="cpu").replace(
        model={"depth": 3, "base_channels": 4}, train={"tile": 64, "batch_size": 2})
    result = drain(lr_find(image, labels, config, start=1e-5, end=10, steps=40))
    smoothed, lrs = np.array(result.smoothed), np.array(result.lrs)
    i = int(np.flatnonzero(lrs == result.suggestion)[0])
    low = int(np.argmin(smoothed))
    skip = int(lr_module.WARMUP * len(lrs))
    assert skip < i < low  # after the warm-up, before the minimum
    # fallen for good by then: every later point up to the minimum is below the start
    assert (smoothed[i:low + 1] < smoothed[skip]).all()
