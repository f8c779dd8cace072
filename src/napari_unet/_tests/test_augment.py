import random
import warnings
from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.errors import InputError
from napari_unet.training.augment import augment, build_pipeline
from napari_unet.training.augment_config import DEFAULT, SEED_NOISE_STD, AugmentConfig
from napari_unet.training.elastic import CoarseGridElastic, coarse_displacement

PROBABILITIES = [f.name for f in fields(AugmentConfig) if f.name.endswith("_p")]
INTENSITY_P = ("brightness_contrast_p", "multiplicative_noise_p", "gauss_noise_p")
GEOMETRIC_P = tuple(p for p in PROBABILITIES if p not in INTENSITY_P)


def only(*names, config=DEFAULT, **changes):
    """The config with every probability but `names` set to 0."""
    off = {p: 0.0 for p in PROBABILITIES if p not in names}
    return replace(config, **off, **changes)


def always(config=DEFAULT, **changes):
    """Every transform applied (flips stay at 0.5, a uniform draw)."""
    return replace(config, **{p: 1.0 for p in PROBABILITIES if p != "flip_p"}, **changes)


def blobs(shape=(96, 96), seed=0, smooth=3.0):
    """Annotation-like labels: smooth random regions of 0, 1 and 2."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), smooth)
    return np.digitize(field, np.quantile(field, [0.3, 0.6])).astype(np.uint8)


def sample(shape=(96, 96), seed=0):
    labels = blobs(shape, seed)
    rng = np.random.default_rng(seed + 1)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    weights = rng.uniform(1, 10, shape).astype(np.float32)
    return image, labels, weights


def as_dtype(image, dtype):
    return image if dtype == np.uint8 else (image / 255).astype(np.float32)


def dihedral(a):
    """The 8 symmetries of the square applied to `a`."""
    return [np.rot90(b, k) for b in (a, a.T) for k in range(4)]


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
@pytest.mark.parametrize("tile", [None, 64])
def test_build_and_apply_without_warnings(strength, interpolation, tile):
    image, labels, weights = sample()
    config = always(strength=strength, interpolation=interpolation)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_pipeline(config, tile=tile)
        for dtype_image in (image, image.astype(np.float32) / 255):
            augment(dtype_image, labels, weights, config=config, rng=1, tile=tile)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize(("shape", "tile"), [((64, 64), None), ((48, 80), None), ((72, 90), 40)])
def test_shapes_and_dtypes_preserved(dtype, shape, tile):
    image, labels, weights = sample(shape)
    image = as_dtype(image, dtype)
    for seed in range(4):
        out = augment(image, labels, weights, config=always(strength=2.0), rng=seed, tile=tile)
        expected = shape if tile is None else (tile, tile)
        assert [a.shape for a in out] == [expected] * 3
        assert [a.dtype for a in out] == [np.dtype(dtype), np.uint8, np.float32]


def test_labels_keep_their_values_and_weights_come_from_input():
    image, labels, weights = sample()
    for seed in range(6):
        _, out_labels, out_weights = augment(
            image, labels, weights, config=always(strength=2.0), rng=seed
        )
        assert set(np.unique(out_labels)) <= {0, 1, 2}
        assert np.isin(out_weights, weights).all()


def test_weights_move_with_labels():
    image, labels, _ = sample()
    table = np.array([0.5, 7.25, 1.75], dtype=np.float32)
    for seed in range(6):
        _, out_labels, out_weights = augment(
            image, labels, table[labels], config=always(strength=2.0), rng=seed
        )
        np.testing.assert_array_equal(out_weights, table[out_labels])


def mismatch(image, labels):
    """Among pixels whose grey level is a pure 20 + 100 * label, the fraction naming another.

    Pure pixels are those the linear interpolation did not blend across a region border.
    """
    level = np.rint((image.astype(float) - 20) / 100)
    pure = np.abs(image - 20 - 100 * level) <= 5
    return np.mean(level[pure] != labels[pure])


def test_labels_stay_aligned_with_image():
    labels = blobs((128, 128), seed=3, smooth=4.0)
    image = (20 + 100 * labels).astype(np.uint8)
    config = only(*GEOMETRIC_P, strength=2.0)
    for seed in range(6):
        out_image, out_labels, _ = augment(image, labels, config=config, rng=seed)
        assert not np.array_equal(out_labels, labels)
        assert mismatch(out_image, out_labels) < 0.005
        # ...while labels one pixel off would be caught.
        assert mismatch(out_image, np.roll(out_labels, 1, axis=1)) > 0.01


def test_mirror_border_never_invents_labels():
    image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    labels = np.full((64, 64), 2, dtype=np.uint8)
    weights = np.full((64, 64), 5.0, dtype=np.float32)
    config = always(strength=2.0)
    for seed in range(8):
        _, out_labels, out_weights = augment(image, labels, weights, config=config, rng=seed)
        assert (out_labels == 2).all()
        assert (out_weights == 5.0).all()


def test_intensity_transforms_touch_image_only():
    image, labels, weights = sample()
    config = only(*INTENSITY_P, **{p: 1.0 for p in INTENSITY_P})
    out_image, out_labels, out_weights = augment(image, labels, weights, config=config, rng=0)
    assert not np.array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_weights, weights)


def test_strength_zero_is_identity():
    image, labels, weights = sample()
    config = always(strength=0.0)
    out = augment(image, labels, weights, config=config, rng=0)
    for result, source in zip(out, (image, labels, weights), strict=True):
        np.testing.assert_array_equal(result, source)
        assert not np.shares_memory(result, source)
    tiled = augment(image, labels, weights, config=config, rng=0, tile=(40, 50))
    for result, source in zip(tiled, (image, labels, weights), strict=True):
        np.testing.assert_array_equal(result, source[28:68, 23:73])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_inputs_not_mutated(dtype):
    image, labels, weights = sample()
    image = as_dtype(image, dtype)
    copies = [a.copy() for a in (image, labels, weights)]
    augment(image, labels, weights, config=always(), rng=0, tile=80)
    for array, copy in zip((image, labels, weights), copies, strict=True):
        np.testing.assert_array_equal(array, copy)


def test_same_seed_same_sample_other_seed_other_sample():
    image, labels, weights = sample()
    first = augment(image, labels, weights, rng=1)
    augment(image, labels, weights, rng=2)  # the cached pipeline's state must not leak
    again = augment(image, labels, weights, rng=np.random.default_rng(1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = augment(image, labels, weights, rng=2)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[1], other[1])


def test_a_generator_advances():
    image, labels, weights = sample()
    rng = np.random.default_rng(0)
    first = augment(image, labels, weights, rng=rng)
    second = augment(image, labels, weights, rng=rng)
    assert not np.array_equal(first[0], second[0])


def test_flips_draw_every_symmetry_independently():
    # albumentations' Compose(seed=s) seeds each transform alike, so its flips agree and
    # only 2 of the 8 symmetries occur; the transforms must share one generator instead.
    image = np.random.default_rng(0).permutation(16).astype(np.uint8).reshape(4, 4)
    candidates = dihedral(image)
    seen = []
    for seed in range(64):
        out, _, _ = augment(image, config=only("flip_p"), rng=seed)
        seen.append(next(i for i, c in enumerate(candidates) if np.array_equal(out, c)))
    counts = np.bincount(seen, minlength=8)
    assert (counts >= 3).all(), counts


def test_flips_keep_non_square_shape():
    image = np.arange(24, dtype=np.uint8).reshape(4, 6)
    outputs = {augment(image, config=only("flip_p"), rng=s)[0].tobytes() for s in range(32)}
    assert len(outputs) == 4


def elastic_transform(strength):
    pipeline = build_pipeline(only("elastic_p", strength=strength))
    (transform,) = pipeline.transforms
    assert isinstance(transform, CoarseGridElastic)
    transform.set_random_state(np.random.default_rng(0), random.Random(0))
    return transform


@pytest.mark.parametrize(("strength", "std"), [(1.0, 10.0), (0.5, 5.0)])
def test_elastic_node_displacement_std_matches_paper(strength, std):
    shape = (65, 65)
    transform = elastic_transform(strength)
    nodes = []
    for _ in range(300):
        maps = transform.get_params_dependent_on_data({"shape": shape}, {})
        dx = maps["map_x"] - np.arange(65)
        dy = maps["map_y"] - np.arange(65)[:, None]
        nodes += [dx[::32, ::32], dy[::32, ::32]]
    assert np.std(nodes) == pytest.approx(std, rel=0.05)
    assert abs(np.mean(nodes)) < 0.1 * std


def test_elastic_field_is_coarse_and_smooth():
    fields_ = np.array([coarse_displacement((256, 256), rng=s) for s in range(20)])
    assert fields_.shape == (20, 2, 256, 256)
    # A 3x3 grid cubic-interpolated over 256 px changes by well under a pixel per pixel.
    assert np.abs(np.diff(fields_, axis=-1)).max() < 1.0
    assert 6.0 < fields_.std() < 10.0


def test_elastic_grid_spans_the_tile():
    # With a tile, the nodes lie on the tile's corners, edges and centre, not the region's.
    window = (20, 30, 65, 65)
    fields_ = np.array([coarse_displacement((105, 125), rng=s, window=window) for s in range(300)])
    nodes = fields_[:, :, 20::32, 30::32][:, :, :3, :3]
    assert np.std(nodes) == pytest.approx(10.0, rel=0.05)


def test_gauss_noise_is_the_seeds_small_noise():
    # The seed's var_limit=(0, 20) on 8-bit data: std at most sqrt(20) = 4.47 grey levels.
    # (2.x's GaussNoise default would give 51 to 112.)
    config = only("gauss_noise_p", gauss_noise_p=1.0)
    flat = np.full((128, 128), 128, dtype=np.uint8)
    stds = [augment(flat, config=config, rng=s)[0].astype(float).std() for s in range(30)]
    assert max(stds) < np.sqrt(20) + 0.4
    assert max(stds) > 3.0
    assert np.mean(stds) == pytest.approx(np.sqrt(20) / 2, abs=0.5)
    flat = np.full((128, 128), 0.5, dtype=np.float32)
    stds = [augment(flat, config=config, rng=s)[0].std() for s in range(30)]
    assert max(stds) < SEED_NOISE_STD * 1.05
    assert max(stds) > 3.0 / 255


def test_fine_elastic_has_the_seeds_magnitude():
    # ElasticTransform(alpha=35, sigma=5, approximate=True) in 1.x blurred uniform noise:
    # about 1.4 px rms; 2.x's default max-normalised Gaussian noise would give about 0.5.
    (transform,) = build_pipeline(only("fine_elastic_p")).transforms
    transform.set_random_state(np.random.default_rng(0), random.Random(0))
    maps = transform.get_params_dependent_on_data({"shape": (256, 256)}, {})
    assert np.std(maps["map_x"] - np.arange(256)) == pytest.approx(1.4, abs=0.2)


def test_affine_scale_is_isotropic_and_within_limits():
    (transform,) = build_pipeline(only("affine_p")).transforms
    transform.set_random_state(np.random.default_rng(0), random.Random(0))
    for _ in range(20):
        scale = transform.get_params_dependent_on_data({"shape": (64, 64)}, {})["scale"]
        assert scale["x"] == scale["y"]
        assert 0.9 <= scale["x"] <= 1.1


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((2, 8, 8), np.uint8), "slice"),
        (np.zeros((8, 8), np.int16), "int16"),
        (np.full((8, 8), 2.0, np.float32), r"\[0, 1\]"),
    ],
)
def test_bad_image_is_named(image, match):
    with pytest.raises(InputError, match=match):
        augment(image)


def test_bad_labels_weights_and_tile_are_named():
    image, labels, weights = sample((32, 32))
    with pytest.raises(InputError, match="labels"):
        augment(image, labels[:16])
    with pytest.raises(InputError, match="weights"):
        augment(image, labels, weights.astype(np.float64))
    with pytest.raises(InputError, match="smaller than the tile"):
        augment(image, labels, weights, tile=40)


@pytest.mark.parametrize(
    "changes", [{"strength": 3.0}, {"flip_p": 1.5}, {"rotate": -1.0}, {"elastic_grid": 1}]
)
def test_bad_config_is_named(changes):
    with pytest.raises(InputError, match=next(iter(changes))):
        AugmentConfig(**changes)


def test_defaults_follow_the_paper_and_seed():
    assert (DEFAULT.elastic_grid, DEFAULT.elastic_std, DEFAULT.strength) == (3, 10.0, 1.0)
    assert SEED_NOISE_STD * 255 == pytest.approx(np.sqrt(20))
