"""Training samples: cached weight maps, slice splits and overlap-tile training samples.

A valid-padding U-Net labels a smaller output than the input it sees (388 of
572 in the paper). A training sample is therefore an input tile of
``tile + margin`` pixels around an output tile of ``tile`` pixels (the sides
of a training `~napari_unet.prediction.tiles.TilePlan`), cut from a
mirror-padded slice; the loss sees the output tile only. Each sample is drawn
from ``(seed, epoch, index)`` alone, so any worker process builds the same
sample and a resumed run sees exactly the samples the interrupted one would
have seen.
"""

import hashlib

import numpy as np

from napari_unet.checks import check_pair
from napari_unet.errors import InputError
from napari_unet.io.labels import MEMBRANE, annotated_slices, to_annotation
from napari_unet.prediction.tiles import TilePlan, mirror_crop
from napari_unet.training.augment import augment
from napari_unet.training.augment_config import AugmentConfig
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


def warped_region(input_size: int) -> int:
    """Return the side of the region the augmentation warps for an input tile: input plus context.

    Parameters
    ----------
    input_size : int
        Side of the network's input tile (a training `TilePlan`'s ``input``).

    Returns
    -------
    region : int
        ``input_size`` plus `CONTEXT` of it, rounded to an even number of pixels.
    """
    return input_size + round(CONTEXT * input_size / 2) * 2


class TrainingSamples:
    """Augmented training samples from annotated slices; a map-style dataset.

    Item ``i`` of epoch ``e`` is a dict of float32 tensors: ``image``
    (1, input, input), ``target`` (output, output; class indices, 1 = membrane)
    and ``weights`` (output, output; 0 where not annotated), with the sides of
    ``plan``.

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
    plan : TilePlan
        The training tile (`~napari_unet.prediction.tiles.TilePlan.for_training`).
    normalization : Normalization
    augment_config : AugmentConfig
    seed : int
    length : int
        Samples per epoch.
    """

    def __init__(self, unit_image, labels, weights, slices, plan: TilePlan, normalization,
                 augment_config: AugmentConfig, seed: int, length: int):
        self.unit_image, self.labels, self.weights = unit_image, labels, weights
        self.slices, self.plan, self.normalization = slices, plan, normalization
        self.augment_config, self.seed, self.length = augment_config, seed, length
        self.region = warped_region(plan.input)
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
        plan, side = self.plan, self.region
        z = self.slices[rng.choice(len(self.slices), p=self._p)]
        # Centre the output tile on a random annotated pixel, so sparse scribbles are seen.
        ys, xs = np.nonzero(self.labels[z])
        pick = rng.integers(len(ys))
        top, left = ys[pick] - side // 2, xs[pick] - side // 2
        region = [mirror_crop(a, top, left, side, side)
                  for a in (self.unit_image[z], self.labels[z], self.weights[z])]
        image, labels, weights = augment(*region, config=self.augment_config, rng=rng,
                                         tile=plan.input)
        inner = slice(plan.halo, plan.halo + plan.output)
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

