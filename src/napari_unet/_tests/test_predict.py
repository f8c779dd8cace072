import numpy as np
import pytest
import torch

from napari_unet.jobs import drain
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.predict import _dihedral, predict, predict_probabilities
from napari_unet.prediction.tiles import mirror_crop

NORM = Normalization(low=0.0, high=1.0, mean=0.5, std=0.25)


def tiny(padding="valid"):
    torch.manual_seed(0)
    return UNet(depth=3, base_channels=4, padding=padding).eval()


def image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def one_pass(model, unit):
    """The whole mirror-padded slice through the network at once."""
    m = model.margin // 2
    padded = mirror_crop(NORM.network(unit), -m, -m, unit.shape[0] + 2 * m, unit.shape[1] + 2 * m)
    with torch.no_grad():
        logits = model(torch.from_numpy(padded)[None, None])
    return torch.softmax(logits, 1)[0, 1].numpy()


@pytest.mark.parametrize("tile", [4, 20, 28, 60, 100])
def test_any_tiling_equals_one_pass(tile):
    model = tiny()
    size = model.valid_input_sizes(max_size=200)[-1] - model.margin  # one pass fits exactly
    unit = image((size, size))
    expected = one_pass(model, unit)
    result = predict_probabilities(model, unit, NORM, tile=tile, batch_size=3)
    assert result.shape == unit.shape and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(37, 53), (2, 17, 90), (1, 5, 5)])
def test_output_shape_equals_input(shape):
    for padding in ("valid", "same"):
        result = predict_probabilities(tiny(padding), image(shape), NORM, tile=16)
        assert result.shape == shape
        assert (result >= 0).all() and (result <= 1).all()


def test_same_padding_tiles_agree_inside():
    model, unit = tiny("same"), image((96, 96))
    a = predict_probabilities(model, unit, NORM, tile=32)
    b = predict_probabilities(model, unit, NORM, tile=64)
    # With 32 px of context per tile, the tiling leaves no visible seam.
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_progress_counts_tiles_of_all_slices():
    job = predict(tiny(), image((2, 40, 40)), NORM, tile=20, batch_size=3)
    seen = []
    assert drain(job, seen.append).shape == (2, 40, 40)
    assert [p.done for p in seen] == [3, 6, 8] and {p.total for p in seen} == {8}


def test_dihedral_inverse():
    x = torch.arange(12.0).reshape(1, 3, 4)
    for k in range(8):
        assert torch.equal(_dihedral(_dihedral(x, k), k, inverse=True), x)
    assert len({tuple(_dihedral(x[:, :3, :3], k).flatten().tolist()) for k in range(8)}) == 8


def test_tta_averages_the_eight_symmetries():
    model, unit = tiny(), image((40, 40))
    tta = predict_probabilities(model, unit, NORM, tile=20, tta=True)
    manual = np.mean([
        _dihedral(torch.from_numpy(predict_probabilities(
            model, _dihedral(torch.from_numpy(unit), k).numpy().copy(), NORM, tile=20)), k,
            inverse=True).numpy()
        for k in range(8)], axis=0)
    np.testing.assert_allclose(tta, manual, atol=1e-5)


def test_tiling_invariant_for_deep_networks():
    # Depth 4: poolings in phase only when every tile starts on a multiple of 8.
    torch.manual_seed(0)
    model = UNet(depth=4, base_channels=2).eval()
    unit = image((70, 90))
    results = [predict_probabilities(model, unit, NORM, tile=t) for t in (8, 20, 44, 100)]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-5)
