"""The augmentation settings (`AugmentConfig`), apart from the pipeline so that configs load light.

What each setting does, and how it maps onto the paper and the seed notebook, is in
`napari_unet.training.augment`.
"""

from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from napari_unet.errors import InputError

Interpolation = Literal["linear", "cubic"]

SEED_NOISE_STD = float(np.sqrt(20.0) / 255.0)
MAX_STRENGTH = 2.0

INTERPOLATIONS = ("linear", "cubic")
_FRACTIONS = (
    "shift",
    "scale",
    "brightness",
    "contrast",
    "multiplicative_noise",
    "gauss_noise_std",
)
_MAGNITUDES = (*_FRACTIONS, "rotate", "elastic_std", "fine_elastic_alpha")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings: the paper's elastic deformation and the seed notebook's set.

    ``strength`` scales magnitudes, not probabilities: every shift, scale deviation, rotation
    angle, displacement (coarse std, fine alpha), brightness/contrast limit, multiplicative
    deviation and noise std is multiplied by it, and a transform whose magnitude becomes 0 is
    left out, so ``strength=0`` is the identity. Flips have no magnitude: their probability is
    multiplied by ``min(strength, 1)``. Other probabilities stay as set. Defaults: the paper's
    elastic deformation on every sample, the seed's magnitudes and its p = 0.95 for the rest.

    Attributes
    ----------
    strength : float
        0 = identity, 1 = these defaults, up to 2.
    flip_p : float
        Probability of each of horizontal flip, vertical flip and transpose; 0.5 makes all 8
        symmetries of the square equally likely.
    affine_p : float
        Probability of a random shift + isotropic scale + rotation.
    shift : float
        Largest shift, as a fraction of the width (x) and height (y), drawn apart.
    scale : float
        Largest relative zoom: the scale is drawn from [1 - scale, 1 + scale].
    rotate : float
        Largest rotation angle, degrees.
    elastic_p : float
        Probability of the paper's coarse-grid elastic deformation.
    elastic_grid : int
        Nodes per axis of the displacement grid (the paper: 3).
    elastic_std : float
        Standard deviation of the node displacements, pixels (the paper: 10).
    fine_elastic_p : float
        Probability of the seed's fine elastic deformation (albumentations ElasticTransform).
    fine_elastic_alpha, fine_elastic_sigma : float
        Its displacement scale and smoothing, pixels (the seed: 35 and 5; about 1.4 px rms).
    brightness_contrast_p : float
        Probability of a random brightness and contrast change.
    brightness, contrast : float
        Largest brightness shift (fraction of the full range) and contrast change (fraction).
    multiplicative_noise_p : float
        Probability of per-pixel multiplicative noise.
    multiplicative_noise : float
        Each pixel is multiplied by a factor drawn from [1 - this, 1 + this].
    gauss_noise_p : float
        Probability of additive Gaussian noise.
    gauss_noise_std : float
        Largest noise std as a fraction of the full range (1/255 is one uint8 grey level);
        the std is drawn from [0, this]. Default sqrt(20) / 255: the seed's variance of up to
        20 grey levels^2.
    interpolation : {'linear', 'cubic'}
        Image interpolation of the geometric transforms (labels and weights: nearest).
    """

    strength: float = 1.0
    flip_p: float = 0.5
    affine_p: float = 0.95
    shift: float = 0.0625
    scale: float = 0.1
    rotate: float = 45.0
    elastic_p: float = 1.0
    elastic_grid: int = 3
    elastic_std: float = 10.0
    fine_elastic_p: float = 0.95
    fine_elastic_alpha: float = 35.0
    fine_elastic_sigma: float = 5.0
    brightness_contrast_p: float = 0.95
    brightness: float = 0.15
    contrast: float = 0.15
    multiplicative_noise_p: float = 0.95
    multiplicative_noise: float = 0.1
    gauss_noise_p: float = 0.95
    gauss_noise_std: float = SEED_NOISE_STD
    interpolation: Interpolation = "linear"

    def __post_init__(self):
        _check_config(self)


def _check_config(config: AugmentConfig) -> None:
    """Raise InputError naming the first setting out of range."""
    if not 0.0 <= config.strength <= MAX_STRENGTH:
        raise InputError(f"augmentation strength {config.strength} is not in [0, {MAX_STRENGTH}]")
    for name in (f.name for f in fields(config) if f.name.endswith("_p")):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise InputError(f"augmentation {name}={getattr(config, name)} is not in [0, 1]")
    for name in _MAGNITUDES:
        if getattr(config, name) < 0:
            raise InputError(f"augmentation {name}={getattr(config, name)} is negative")
    for name in _FRACTIONS:
        if getattr(config, name) * MAX_STRENGTH >= 1.0:
            raise InputError(f"augmentation {name}={getattr(config, name)} is not below 0.5")
    if config.elastic_grid < 2:
        raise InputError(f"elastic_grid={config.elastic_grid}: the grid needs 2 nodes or more")
    if config.fine_elastic_sigma < 1:
        raise InputError(f"fine_elastic_sigma={config.fine_elastic_sigma} is below 1 pixel")
    if config.interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation {config.interpolation!r} is not 'linear' or 'cubic'")


DEFAULT = AugmentConfig()
