"""The paper's elastic deformation: random displacements on a coarse grid, cubic-interpolated.

Ronneberger et al. 2015, sec. 3.1, names elastic deformation on a coarse 3 x 3 grid as the key
to training from few annotated images. `coarse_displacement` draws the dense displacement
field; `CoarseGridElastic` applies it as an albumentations transform, the image with linear
(or cubic) interpolation and the masks (labels, weights) with nearest neighbour, mirroring
pixels mapped from outside the input. Unlike albumentations' GridElasticDeform, which moves
interior grid points by a uniform integer amount and warps piecewise per cell, the field is
smooth everywhere. `napari_unet.training.augment` puts it in the training pipeline.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never ask PyPI at import

from functools import lru_cache
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.core.type_definitions import Targets
from scipy import ndimage

MIRROR = cv2.BORDER_REFLECT_101


@lru_cache(maxsize=64)
def _spline_weights(nodes: int, length: int, start: int, span: int) -> np.ndarray:
    """Return the (length, nodes) matrix that interpolates node values to every pixel.

    Node k sits at pixel ``start + k * (span - 1) / (nodes - 1)``; column k is the cubic
    B-spline interpolant (through the nodes, mirrored past the ends) of the k-th unit vector.
    """
    position = (np.arange(length) - start) * (nodes - 1) / max(span - 1, 1)
    columns = [
        ndimage.map_coordinates(unit, [position], order=3, mode="mirror") for unit in np.eye(nodes)
    ]
    weights = np.stack(columns, axis=1).astype(np.float32)
    weights.setflags(write=False)
    return weights


def coarse_displacement(
    shape: tuple[int, int],
    *,
    grid: int = 3,
    std: float = 10.0,
    rng: np.random.Generator | int | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Draw the dense displacement field of the paper's elastic deformation.

    Ronneberger et al. 2015, sec. 3.1: "random displacement vectors on a coarse 3 by 3 grid.
    The displacements are sampled from a Gaussian distribution with 10 pixels standard
    deviation. Per-pixel displacements are then computed using bicubic interpolation."
    The nodes are spread evenly over `window`, the outer ones on its edges; the dense field is
    the separable cubic B-spline interpolant of the node vectors (it passes through them; past
    the window the node grid is mirrored). At the nodes the std is exactly `std`; in between
    interpolation averages neighbours, so over the whole window the rms is about 0.8 `std`.

    Parameters
    ----------
    shape : (int, int)
        (Y, X) size of the field.
    grid : int
        Nodes per axis.
    std : float
        Standard deviation of each node's displacement components, pixels.
    rng : numpy.random.Generator or int or None
        Random generator or seed.
    window : (top, left, height, width) or None
        The box the grid spans (for a training tile: the tile inside the larger region);
        None spans the whole `shape`.

    Returns
    -------
    field : (2, Y, X) float32 ndarray
        Displacement along Y (``field[0]``) and X (``field[1]``), pixels: the output pixel
        (y, x) samples the input at (y + field[0, y, x], x + field[1, y, x]).
    """
    rng = np.random.default_rng(rng)
    height, width = shape
    top, left, span_y, span_x = window or (0, 0, height, width)
    nodes = rng.normal(0.0, std, size=(2, grid, grid)).astype(np.float32)
    weights_y = _spline_weights(grid, height, top, span_y)
    weights_x = _spline_weights(grid, width, left, span_x)
    return weights_y @ nodes @ weights_x.T


def _remap(array: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int):
    """Sample `array` at (map_y, map_x) with mirrored borders, keeping a trailing channel."""
    out = cv2.remap(array, map_x, map_y, interpolation, borderMode=MIRROR)
    return out if out.ndim == array.ndim else out[..., None]


def _central_window(shape: tuple[int, ...], tile: tuple[int, int] | None):
    """Return (top, left, height, width) of the centre crop `A.CenterCrop` takes, or None."""
    if tile is None:
        return None
    return ((shape[0] - tile[0]) // 2, (shape[1] - tile[1]) // 2, *tile)


class CoarseGridElastic(A.DualTransform):
    """The paper's elastic deformation as an albumentations transform (image and masks).

    Parameters
    ----------
    grid : int
        Nodes per axis of the displacement grid.
    std : float
        Node displacement standard deviation, pixels.
    tile : (int, int) or None
        When a centre crop to this size follows, the grid spans that crop, so the
        deformation a training tile sees does not depend on the context around it.
    interpolation : int
        OpenCV interpolation flag for the image; masks use nearest neighbour.
    p : float
        Probability of applying the transform.

    See Also
    --------
    coarse_displacement : the displacement field.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(
        self,
        grid: int = 3,
        std: float = 10.0,
        tile: tuple[int, int] | None = None,
        interpolation: int = cv2.INTER_LINEAR,
        p: float = 0.5,
    ):
        super().__init__(p=p)
        self.grid = grid
        self.std = std
        self.tile = tile
        self.interpolation = interpolation

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        """Draw the sampling maps of one deformation."""
        shape = params["shape"][:2]
        dy, dx = coarse_displacement(
            shape,
            grid=self.grid,
            std=self.std,
            rng=self.random_generator,
            window=_central_window(shape, self.tile),
        )
        dy += np.arange(shape[0], dtype=np.float32)[:, None]
        dx += np.arange(shape[1], dtype=np.float32)
        return {"map_x": dx, "map_y": dy}

    def apply(self, img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params: Any):
        """Warp the image with the transform's interpolation."""
        return _remap(img, map_x, map_y, self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, **params):
        """Warp a mask (labels or weights) with nearest-neighbour sampling."""
        return _remap(mask, map_x, map_y, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        """Name the arguments that `repr` and serialisation show."""
        return ("grid", "std", "tile", "interpolation")
