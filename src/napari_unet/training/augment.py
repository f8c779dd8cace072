"""Training-data augmentation: Ronneberger et al. 2015, sec. 3.1, plus the seed notebook's set.

The paper asks for "shift and rotation invariance as well as robustness to deformations and
gray value variations", and names elastic deformation on a coarse 3 x 3 grid as the key to
training from few annotated images. The seed notebook used an albumentations 1.x pipeline;
here is the same set in albumentations 2.x, with arguments that mean what the seed meant:

=============================================  =============================================
seed (albumentations 1.x)                      here (albumentations 2.x)
=============================================  =============================================
HorizontalFlip, VerticalFlip, Transpose,       HorizontalFlip, VerticalFlip, Transpose, each
RandomRotate90 (in a OneOf)                    with p = 0.5: one uniform draw from all 8
                                               symmetries of the square (rot90 = transpose +
                                               flip); Transpose left out for non-square output
ShiftScaleRotate(shift_limit=0.0625,           Affine(translate_percent=(-0.0625, 0.0625),
scale_limit=0.1, rotate_limit=45)              scale=(0.9, 1.1), keep_ratio=True,
                                               rotate=(-45, 45), border_mode=REFLECT_101):
                                               2.x's ShiftScaleRotate is deprecated, draws x
                                               and y scale apart and fills with a constant
GaussNoise(var_limit=(0, 20), mean=0)          GaussNoise(std_range=(0, sqrt(20) / 255)) on
                                               float32 in [0, 1]: std up to 4.47 grey levels
                                               of 255 (var_limit alone is ignored with a
                                               warning, leaving std 51 to 112 grey levels)
MultiplicativeNoise(multiplier=(0.9, 1.1),     unchanged
elementwise=True)
ElasticTransform(alpha=35, sigma=5,            ElasticTransform(alpha=35, sigma=5,
alpha_affine=3, approximate=True)              approximate=True, noise_distribution=
                                               "uniform", border_mode=REFLECT_101): 2.x's
                                               default Gaussian noise is max-normalised (3x
                                               weaker) and its default border is a constant;
                                               alpha_affine is gone (Affine covers it)
RandomBrightnessContrast(0.15, 0.15)           unchanged (brightness_by_max=True)
PadIfNeeded(128, 128, BORDER_REFLECT)          dropped: a training tile is cropped instead
=============================================  =============================================

The paper's own elastic deformation is `CoarseGridElastic` (`coarse_displacement`), in
`napari_unet.training.elastic`, not albumentations' GridElasticDeform, which moves interior
grid points by a uniform integer amount and warps piecewise per cell.

Order: flips, affine, coarse-grid elastic, fine elastic (geometric, applied jointly), then the
optional centre crop to the training tile, then (in float32) brightness/contrast,
multiplicative noise and Gaussian noise (image only). Noise comes last so its standard
deviation is what was asked for rather than smoothed by a later warp.

Joint geometry: the image is resampled with linear (or cubic) interpolation; the annotation
labels and the weight map with nearest neighbour, so labels stay in {0, 1, 2} and every output
pixel takes its label *and* its weight from the same source pixel. (Linear weights next to
nearest labels would give a membrane pixel the blend of a membrane weight and an interior
weight, a pair that never existed.) Pixels mapped from outside the input are mirrored
(``cv2.BORDER_REFLECT_101``), never filled with a constant that would invent a label value.

Intensity scale: augment takes uint8 (0..255) or float32 normalised to [0, 1] (albumentations
clips float32 to [0, 1], so z-scored images must not be fed here). The geometric transforms
work in the input dtype; the intensity transforms always see float32 in [0, 1] (``ToFloat``
divides uint8 by 255; 2.x adds noise to uint8 with truncation toward zero, which shrinks a
noise of 2 grey levels by ~15%), and `augment` rounds back to uint8. So ``std_range`` and
brightness are fractions of 1.0, i.e. of the full 8-bit range. The seed's variance limit of
20 grey levels^2 on 8-bit data is a std up to sqrt(20) = 4.47 grey levels:
``std_range=(0, sqrt(20) / 255)``. 2.x draws the std uniformly where 1.x drew the variance
uniformly; the bounds are the same.

Randomness: every call is driven by ``rng`` (an int seed or a numpy Generator). Albumentations
2.x's ``Compose(seed=s)`` gives every transform its own generator seeded with the same ``s``,
so e.g. HorizontalFlip and VerticalFlip make identical decisions; here one generator drawn
from ``rng`` is shared by all transforms of a call instead.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never ask PyPI at import

import random
import threading

import albumentations as A
import cv2
import numpy as np

from napari_unet.checks import check_positive
from napari_unet.errors import InputError
from napari_unet.training.augment_config import DEFAULT, AugmentConfig
from napari_unet.training.elastic import MIRROR, CoarseGridElastic

Tile = int | tuple[int, int] | None

_CV2_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}




def _flips(config: AugmentConfig, square: bool) -> list:
    """Random flips; with p = 0.5 each, a uniform draw from the symmetries of the square."""
    p = config.flip_p * min(config.strength, 1.0)
    if p == 0:
        return []
    flips = [A.HorizontalFlip(p=p), A.VerticalFlip(p=p)]
    return [*flips, A.Transpose(p=p)] if square else flips


def _affine(config: AugmentConfig) -> A.Affine | None:
    """Make the seed's ShiftScaleRotate: independent x/y shift, isotropic scale, rotation."""
    s = config.strength
    if config.affine_p == 0 or s * (config.shift + config.scale + config.rotate) == 0:
        return None
    return A.Affine(
        translate_percent=(-config.shift * s, config.shift * s),
        scale=(1 - config.scale * s, 1 + config.scale * s),
        keep_ratio=True,
        rotate=(-config.rotate * s, config.rotate * s),
        interpolation=_CV2_INTERPOLATION[config.interpolation],
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=MIRROR,
        p=config.affine_p,
    )


def _coarse_elastic(config: AugmentConfig, tile) -> CoarseGridElastic | None:
    """Make the paper's coarse-grid elastic deformation."""
    std = config.elastic_std * config.strength
    if config.elastic_p == 0 or std == 0:
        return None
    return CoarseGridElastic(
        grid=config.elastic_grid,
        std=std,
        tile=tile,
        interpolation=_CV2_INTERPOLATION[config.interpolation],
        p=config.elastic_p,
    )


def _fine_elastic(config: AugmentConfig) -> A.ElasticTransform | None:
    """Make the seed's ElasticTransform with its 1.x meaning (uniform noise, mirror border)."""
    alpha = config.fine_elastic_alpha * config.strength
    if config.fine_elastic_p == 0 or alpha == 0:
        return None
    return A.ElasticTransform(
        alpha=alpha,
        sigma=config.fine_elastic_sigma,
        approximate=True,
        noise_distribution="uniform",
        interpolation=_CV2_INTERPOLATION[config.interpolation],
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=MIRROR,
        p=config.fine_elastic_p,
    )


def _brightness_contrast(config: AugmentConfig) -> A.RandomBrightnessContrast | None:
    """Make the seed's brightness/contrast change: img * (1 + c) + b * max_value."""
    b, c = config.brightness * config.strength, config.contrast * config.strength
    if config.brightness_contrast_p == 0 or b + c == 0:
        return None
    return A.RandomBrightnessContrast(
        brightness_limit=(-b, b),
        contrast_limit=(-c, c),
        brightness_by_max=True,
        p=config.brightness_contrast_p,
    )


def _multiplicative_noise(config: AugmentConfig) -> A.MultiplicativeNoise | None:
    """Make the seed's per-pixel multiplicative noise."""
    m = config.multiplicative_noise * config.strength
    if config.multiplicative_noise_p == 0 or m == 0:
        return None
    return A.MultiplicativeNoise(
        multiplier=(1 - m, 1 + m), elementwise=True, p=config.multiplicative_noise_p
    )


def _gauss_noise(config: AugmentConfig) -> A.GaussNoise | None:
    """Make the seed's additive Gaussian noise (std a fraction of the dtype's full range)."""
    std = config.gauss_noise_std * config.strength
    if config.gauss_noise_p == 0 or std == 0:
        return None
    return A.GaussNoise(std_range=(0.0, std), mean_range=(0.0, 0.0), p=config.gauss_noise_p)


def _tile_shape(tile: Tile) -> tuple[int, int] | None:
    """Normalise a tile size (int or (height, width)) to a tuple, or None."""
    if tile is None:
        return None
    height, width = (tile, tile) if np.ndim(tile) == 0 else tile
    return check_positive(height, name="tile"), check_positive(width, name="tile")


def build_pipeline(config: AugmentConfig = DEFAULT, *, tile: Tile = None, square: bool = True):
    """Build the albumentations pipeline of a configuration.

    Parameters
    ----------
    config : AugmentConfig
        The settings; transforms whose probability or magnitude is 0 are left out.
    tile : int or (int, int) or None
        When given, the geometric transforms are followed by a centre crop to this size, and
        the intensity transforms work on the crop only.
    square : bool
        Whether the output is square. Transpose (and so rot90) is left out when it is not, so
        the output shape never changes.

    Returns
    -------
    pipeline : albumentations.Compose
        Targets ``image``, ``mask`` (annotation labels) and ``weights`` (a second mask). The
        image comes back as float32 in [0, 1] when any intensity transform is active. Built
        with ``strict=True``: an argument albumentations does not know is an error. Seed it
        with ``pipeline.set_random_state`` (see `augment`), not ``Compose(seed=...)``.
    """
    tile = _tile_shape(tile)
    geometric = [
        *_flips(config, square),
        _affine(config),
        _coarse_elastic(config, tile),
        _fine_elastic(config),
    ]
    crop = [A.CenterCrop(height=tile[0], width=tile[1], p=1.0)] if tile else []
    intensity = [_brightness_contrast(config), _multiplicative_noise(config), _gauss_noise(config)]
    intensity = [t for t in intensity if t is not None]
    # 2.x adds noise to uint8 with truncation toward zero, shrinking small noise by ~15%.
    as_float = [A.ToFloat(p=1.0)] if intensity else []
    return A.Compose(
        [t for t in [*geometric, *crop, *as_float, *intensity] if t is not None],
        additional_targets={"weights": "mask"},
        strict=True,
    )


_LOCAL = threading.local()


def _cached_pipeline(config: AugmentConfig, tile: tuple[int, int] | None, square: bool):
    """Return this thread's pipeline for these settings (a pipeline holds random state)."""
    cache = _LOCAL.__dict__.setdefault("pipelines", {})
    key = (config, tile, square)
    if key not in cache:
        if len(cache) >= 16:
            cache.clear()
        cache[key] = build_pipeline(config, tile=tile, square=square)
    return cache[key]


def _check_inputs(image, labels, weights, tile: tuple[int, int] | None) -> None:
    """Raise InputError naming the first problem with the arrays of `augment`."""
    if image.ndim != 2:
        raise InputError(f"augment takes one (Y, X) slice; got shape {image.shape}")
    if image.dtype == np.float32:
        if image.size and not (image.min() >= 0.0 and image.max() <= 1.0):
            raise InputError("a float32 image to augment must be normalised to [0, 1]")
    elif image.dtype != np.uint8:
        raise InputError(f"augment takes uint8 or float32 images in [0, 1], not {image.dtype}")
    for name, array, dtype in (("labels", labels, np.uint8), ("weights", weights, np.float32)):
        if array is not None and (array.shape != image.shape or array.dtype != dtype):
            raise InputError(
                f"{name} must be {np.dtype(dtype)} of the image's shape {image.shape}; "
                f"got {array.dtype} {array.shape}"
            )
    if tile is not None and (image.shape[0] < tile[0] or image.shape[1] < tile[1]):
        raise InputError(f"a region of shape {image.shape} is smaller than the tile {tile}")


def _own(result: np.ndarray | None, source: np.ndarray | None) -> np.ndarray | None:
    """Return `result`, copied when it still shares memory with the caller's array."""
    if result is not None and np.shares_memory(result, source):
        return result.copy()
    return result


def _restore_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round a float32 [0, 1] image back to uint8 when the input was uint8."""
    if image.dtype == dtype:
        return image
    return np.clip(np.rint(image * 255.0), 0, 255).astype(dtype)


def augment(
    image: np.ndarray,
    labels: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    *,
    config: AugmentConfig = DEFAULT,
    rng: np.random.Generator | int | None = None,
    tile: Tile = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Augment one image with its labels and weight map, jointly.

    Parameters
    ----------
    image : (Y, X) uint8 or float32 ndarray
        uint8, or float32 normalised to [0, 1] (see the module notes on intensity scale).
    labels : (Y, X) uint8 ndarray or None
        Annotation labels (0 = not annotated, 1 = membrane, 2 = interior).
    weights : (Y, X) float32 ndarray or None
        Per-pixel loss weights (e.g. `napari_unet.weight_map`), warped like the labels.
    config : AugmentConfig
        The settings.
    rng : numpy.random.Generator or int or None
        Random generator or seed; the same seed gives the same sample. A Generator advances,
        so successive calls with it give different samples.
    tile : int or (int, int) or None
        Output size. Pass a region larger than the tile (training samples regions around its
        tiles) and the centre of the augmented region comes back, with real context where a
        rotation or deformation reaches outside the tile; what falls outside the region is
        mirrored. None returns the whole region.

    Returns
    -------
    image : (Y', X') ndarray
        Same dtype as the input; (Y', X') is `tile`, or (Y, X).
    labels : (Y', X') uint8 ndarray or None
        Values only from the input labels (nearest-neighbour sampling).
    weights : (Y', X') float32 ndarray or None
        Values only from the input weights, each from the same source pixel as its label.

    Raises
    ------
    InputError
        For a wrong dimension, dtype, value range or shape, or a region smaller than `tile`.

    Notes
    -----
    The inputs are never modified, and the outputs never share memory with them.
    """
    image = np.asarray(image)
    labels = None if labels is None else np.asarray(labels)
    weights = None if weights is None else np.asarray(weights)
    tile = _tile_shape(tile)
    _check_inputs(image, labels, weights, tile)
    out_shape = tile or image.shape
    pipeline = _cached_pipeline(config, tile, out_shape[0] == out_shape[1])
    seed = int(np.random.default_rng(rng).integers(2**63))
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    data = {"image": image, "mask": labels, "weights": weights}
    out = pipeline(**{key: value for key, value in data.items() if value is not None})
    out["image"] = _restore_dtype(out["image"], image.dtype)
    return tuple(_own(out.get(key), data[key]) for key in data)
