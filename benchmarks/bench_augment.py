"""Augmentation throughput on one core: 572 x 572 samples (image + labels + weights).

Real ISBI 2012 slices, mirror-padded from 512 to the region size. Prints samples per second
for the full default pipeline, for a 572 tile cropped from a larger region (the context a
training sampler would pass), and the cost of each stage on its own (probability 1).

Run from the repository root::

    NO_ALBUMENTATIONS_UPDATE=1 .venv/bin/python benchmarks/bench_augment.py [--repeats N]
"""

import os

os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse
import time
from dataclasses import fields, replace

import cv2
import numpy as np

from napari_unet.io.sample import isbi2012
from napari_unet.training.augment import augment
from napari_unet.training.augment_config import DEFAULT, AugmentConfig

TILE = 572
PROBABILITIES = [f.name for f in fields(AugmentConfig) if f.name.endswith("_p")]


def weight_maps(labels):
    """Return the paper's weight maps when the weights module exists, else class weights."""
    try:
        from napari_unet import weight_map

        return np.stack([weight_map(slice_ == 2) for slice_ in labels])
    except (ImportError, AttributeError):
        counts = np.bincount(labels.ravel(), minlength=3).astype(np.float32)
        table = np.where(counts > 0, counts.sum() / (2 * np.maximum(counts, 1)), 0)
        return table.astype(np.float32)[labels]


def regions(size, n_slices=8):
    """Mirror-pad the first ISBI slices (and their labels and weights) to `size`."""
    image, labels = isbi2012()
    image, labels = image[:n_slices], labels[:n_slices]
    weights = weight_maps(labels)
    before = (size - 512) // 2
    pad = ((0, 0), (before, size - 512 - before), (before, size - 512 - before))
    return [np.pad(a, pad, mode="reflect") for a in (image, labels, weights)]


def per_sample_seconds(data, config, *, tile, repeats):
    """Median wall time of one augment call, cycling through the slices."""
    image, labels, weights = data
    times = []
    for i in range(repeats + 3):
        k = i % len(image)
        start = time.perf_counter()
        augment(image[k], labels[k], weights[k], config=config, rng=i, tile=tile)
        times.append(time.perf_counter() - start)
    return float(np.median(times[3:]))


def report(name, seconds):
    print(f"{name:<46} {seconds * 1e3:8.1f} ms {1 / seconds:8.1f} samples/s")


def stage_configs():
    """One config per stage: that stage at probability 1 (flips: 0.5 each), others off."""
    for name in PROBABILITIES:
        off = {p: 0.0 for p in PROBABILITIES if p != name}
        on = {name: 0.5 if name == "flip_p" else 1.0}
        yield name.removesuffix("_p"), replace(DEFAULT, **off, **on)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    padded = regions(TILE)
    context = regions(TILE + 240)
    print(f"cv2 threads {cv2.getNumThreads()}, region {TILE}x{TILE} uint8 + uint8 + float32")
    report(
        "default pipeline, 572 in -> 572 out",
        per_sample_seconds(padded, DEFAULT, tile=None, repeats=args.repeats),
    )
    report(
        "default pipeline, 812 region -> 572 tile",
        per_sample_seconds(context, DEFAULT, tile=TILE, repeats=args.repeats),
    )
    report(
        "float32 image, 572 in -> 572 out",
        per_sample_seconds(
            [padded[0].astype(np.float32) / 255, *padded[1:]],
            DEFAULT,
            tile=None,
            repeats=args.repeats,
        ),
    )
    print("stages alone (572 in -> 572 out):")
    report(
        "  none (strength 0: checks and copies)",
        per_sample_seconds(
            padded, replace(DEFAULT, strength=0.0), tile=None, repeats=args.repeats
        ),
    )
    for name, config in stage_configs():
        report(f"  {name}", per_sample_seconds(padded, config, tile=None, repeats=args.repeats))


if __name__ == "__main__":
    main()
