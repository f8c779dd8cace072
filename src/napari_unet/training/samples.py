"""Training samples: cached weight maps, slice splits and overlap-tile training samples.

A valid-padding U-Net labels a smaller output than the input it sees (388 of
572 in the paper). A training sample is therefore an input tile of
``tile + margin`` pixels around an output tile of ``tile`` pixels, cut from a
mirror-padded slice; the loss sees the output tile only. Each sample is drawn
from ``(seed, epoch, index)`` alone, so any worker process builds the same
sample and a resumed run sees exactly the samples the interrupted one would
have seen.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from napari_unet.checks import check_pair
from napari_unet.errors import InputError
from napari_unet.io.labels import MEMBRANE, annotated_slices, to_annotation
from napari_unet.prediction.tiles import mirror_crop
from napari_unet.training.augment import AugmentConfig, augment
from napari_unet.training.weights import WeightConfig

CONTEXT = 0.2
"""Extra context around an input tile, as a fraction of its side, that the augmentation
warps in from real data (rather than mirroring) when it rotates or deforms the tile."""


class WeightCache:
    """Weight maps of annotated slices, recomputed only when a slice's labels change."""

    def __init__(self, config: WeightConfig):
        self.config = config
        self._maps: dict[int, tuple[bytes, np.ndarray]] = {}
        self.computed = 0

    def get(self, index: int, labels: np.ndarray) -> np.ndarray:
        """Return the weight map of one slice of annotation labels (index names the slice)."""
        digest = hashlib.blake2b(np.ascontiguousarray(labels).data, digest_size=16).digest()
        cached = self._maps.get(index)
        if cached is None or cached[0] != digest:
            weights = self.config.of(labels)
            cached = self._maps[index] = (digest, weights)
            self.computed += 1
        return cached[1]


def pick_validation(candidates: list[int]) -> list[int]:
    """Pick about one slice in ten for validation, spread over the candidates.

    At least one when there are three or more candidates, none below that.

    Parameters
    ----------
    candidates : list of int
        Annotated slice indices, ascending.

    Returns
    -------
    val : list of int
    """
    count = len(candidates) // 10 or (1 if len(candidates) >= 3 else 0)
    picks = np.linspace(0, len(candidates) - 1, count + 2)[1:-1] if count else []
    return sorted({candidates[round(p)] for p in picks})


def split_slices(
    labels: np.ndarray, val_slices: tuple[int, ...] | None
) -> tuple[list[int], list[int]]:
    """Choose training and validation slices among the annotated ones.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray
        Annotation labels.
    val_slices : tuple of int or None
        The user's choice; None: about one annotated slice in ten (at least one,
        spread over the stack) when three or more are annotated, else none.

    Returns
    -------
    train, val : list of int
        Disjoint; every training slice is annotated.
    """
    annotated = annotated_slices(labels)
    if not annotated:
        raise InputError("the labels hold no annotation: paint membranes (1) and interiors (2)")
    if val_slices is None:
        val = pick_validation(annotated)
    else:
        val = sorted(set(val_slices))
        bad = [z for z in val if not 0 <= z < len(labels)]
        if bad:
            raise InputError(
                f"validation slices {bad} are outside the stack (0..{len(labels) - 1})"
            )
        empty = [z for z in val if z not in annotated]
        if empty:
            raise InputError(f"validation slices {empty} hold no annotation")
    train = [z for z in annotated if z not in val]
    if not train:
        raise InputError("no annotated slice is left for training once the validation slices "
                         f"{val} are set aside")
    return train, val


@dataclass(frozen=True)
class TileGeometry:
    """Sizes of a training sample.

    Attributes
    ----------
    tile : int
        Output tile side (what the loss sees).
    input : int
        Input tile side (``tile + margin``).
    region : int
        Side of the region the augmentation warps (the input plus context).
    """

    tile: int
    input: int
    region: int

    @classmethod
    def for_network(cls, tile: int, input_size: int) -> "TileGeometry":
        """Geometry for a network whose input ``input_size`` gives an output of ``tile``."""
        context = round(CONTEXT * input_size / 2) * 2
        return cls(tile=tile, input=input_size, region=input_size + context)


class TrainingSamples:
    """Augmented training samples from annotated slices; a map-style dataset.

    Item ``i`` of epoch ``e`` is a dict of float32 tensors: ``image``
    (1, input, input), ``target`` (tile, tile; class indices, 1 = membrane) and
    ``weights`` (tile, tile; 0 where not annotated).

    Parameters
    ----------
    unit_image : (Z, Y, X) float32 ndarray
        The image mapped to [0, 1] (`Normalization.unit`).
    labels : (Z, Y, X) uint8 ndarray
        Annotation labels.
    weights : dict of int to (Y, X) float32 ndarray
        Weight map of each training slice.
    slices : list of int
        Training slices.
    geometry : TileGeometry
    normalization : Normalization
    augment_config : AugmentConfig
    seed : int
    length : int
        Samples per epoch.
    """

    def __init__(self, unit_image, labels, weights, slices, geometry, normalization,
                 augment_config: AugmentConfig, seed: int, length: int):
        self.unit_image, self.labels, self.weights = unit_image, labels, weights
        self.slices, self.geometry, self.normalization = slices, geometry, normalization
        self.augment_config, self.seed, self.length = augment_config, seed, length
        self.epoch = 0
        # Sampling probability of a slice grows with its annotated area.
        counts = np.array([np.count_nonzero(labels[z]) for z in slices], dtype=np.float64)
        self._p = counts / counts.sum()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        import torch

        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, target, weights = self.sample(rng)
        return {"image": torch.from_numpy(image[None]), "target": torch.from_numpy(target),
                "weights": torch.from_numpy(weights)}

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw one sample: network input, class targets and pixel weights (numpy)."""
        g = self.geometry
        z = self.slices[rng.choice(len(self.slices), p=self._p)]
        # Centre the output tile on a random annotated pixel, so sparse scribbles are seen.
        ys, xs = np.nonzero(self.labels[z])
        pick = rng.integers(len(ys))
        top, left = ys[pick] - g.region // 2, xs[pick] - g.region // 2
        region = [mirror_crop(a, top, left, g.region, g.region)
                  for a in (self.unit_image[z], self.labels[z], self.weights[z])]
        image, labels, weights = augment(*region, config=self.augment_config, rng=rng,
                                         tile=g.input)
        crop = (g.input - g.tile) // 2
        inner = slice(crop, crop + g.tile)
        labels, weights = labels[inner, inner], weights[inner, inner]
        return (self.normalization.network(image).astype(np.float32),
                class_targets(labels), np.ascontiguousarray(weights))


def class_targets(labels: np.ndarray) -> np.ndarray:
    """Map annotation labels to class indices: 1 = membrane, 0 = interior or not annotated."""
    return (np.asarray(labels) == MEMBRANE).astype(np.int64)


def prepare(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check an image and labels and return them as (Z, Y, X) with annotation labels."""
    check_pair(image, labels)
    labels = to_annotation(labels)
    if image.ndim == 2:
        image, labels = image[None], labels[None]
    return image, labels

