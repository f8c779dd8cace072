import numpy as np
import pytest

from napari_unet.config import ModelConfig
from napari_unet.errors import InputError
from napari_unet.model.normalization import Normalization
from napari_unet.prediction.tiles import TilePlan, mirror_crop, mirror_indices
from napari_unet.training.augment_config import AugmentConfig
from napari_unet.training.samples import TrainingSamples, WeightCache, split_slices
from napari_unet.training.weights import WeightConfig


@pytest.mark.parametrize("length", [1, 2, 5])
def test_mirror_indices_match_numpy_reflect(length):
    row = np.arange(length)
    padded = np.pad(row, 7, mode="reflect") if length > 1 else np.zeros(length + 14, int)
    np.testing.assert_array_equal(row[mirror_indices(-7, length + 14, length)], padded)


def test_mirror_crop_inside_is_a_plain_crop():
    array = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(mirror_crop(array, 2, 3, 4, 5), array[2:6, 3:8])


def test_normalization_maps_to_unit_range():
    image = np.random.default_rng(0).normal(1000, 50, (4, 64, 64))
    norm = Normalization.of(image)
    unit = norm.unit(image)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    standard = norm.network(unit)
    assert abs(standard.mean()) < 0.01 and abs(standard.std() - 1) < 0.01
    flat = Normalization.of(np.full((8, 8), 7, np.uint16))
    assert np.isfinite(flat.network(flat.unit(np.full((8, 8), 7)))).all()


def test_split_slices():
    labels = np.zeros((30, 4, 4), np.uint8)
    labels[::2] = 2  # 15 annotated slices
    train, val = split_slices(labels, None)
    assert len(val) == 1 and not set(train) & set(val)
    assert set(train) | set(val) == set(range(0, 30, 2))
    train, val = split_slices(labels, (4, 10))
    assert val == [4, 10] and 4 not in train
    with pytest.raises(InputError, match=r"validation slices \[3\] hold no annotation"):
        split_slices(labels, (3,))
    with pytest.raises(InputError, match="outside the stack"):
        split_slices(labels, (30,))
    with pytest.raises(InputError, match="no annotated slice is left"):
        split_slices(labels[:1], (0,))
    with pytest.raises(InputError, match="hold no annotation"):
        split_slices(np.zeros((2, 4, 4), np.uint8), None)


def test_weight_cache_recomputes_only_changed_slices(isbi_small):
    _, labels = isbi_small
    cache = WeightCache(WeightConfig())
    first = cache.get(0, labels[0])
    assert cache.get(0, labels[0].copy()) is first and cache.computed == 1
    edited = labels[0].copy()
    edited[:10] = 0
    assert cache.get(0, edited) is not first and cache.computed == 2
    assert (cache.get(0, edited)[:10] == 0).all()


def samples(isbi_small, seed=0):
    image, labels = isbi_small
    labels = labels.copy()
    labels[1, :, 64:] = 0  # partly annotated slice
    norm = Normalization.of(image)
    cache = WeightCache(WeightConfig())
    weights = {z: cache.get(z, labels[z]) for z in range(3)}
    plan = TilePlan.for_training(ModelConfig(depth=4), 44)  # input 132, output 44
    return TrainingSamples(norm.unit(image), labels, weights, [0, 1, 2], plan, norm,
                           AugmentConfig(), seed, 6)


def test_samples_shapes_and_determinism(isbi_small):
    data = samples(isbi_small)
    item = data[3]
    assert item["image"].shape == (1, 132, 132) and item["target"].shape == (44, 44)
    assert item["weights"].shape == (44, 44)
    again = samples(isbi_small)[3]
    for key in item:
        assert (item[key] == again[key]).all()
    assert not (samples(isbi_small, seed=1)[3]["image"] == item["image"]).all()
    data.epoch = 1
    assert not (data[3]["image"] == item["image"]).all()


def test_samples_target_membrane_where_weighted(isbi_small):
    data = samples(isbi_small)
    for index in range(len(data)):
        item = data[index]
        target, weights = item["target"].numpy(), item["weights"].numpy()
        assert set(np.unique(target)) <= {0, 1}
        assert (weights >= 0).all() and (weights > 0).any()
