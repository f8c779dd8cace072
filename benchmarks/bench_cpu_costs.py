"""What a minute of `cpu`-preset training buys: threads, and the share spent validating.

On the bundled ISBI 2012 sample with the `cpu` preset (slices 0-23 train, 24-26 validate),
times in the same process:

- updates per second with 1 thread and with every core of the CPU affinity (the command
  line's default), after a warm-up;
- one validation as `train` runs it (predict the 3 validation slices, score the threshold
  sweep), against the training time of one epoch.

Usage::

    python benchmarks/bench_cpu_costs.py [--seconds 30]

Run it on a quiet machine: the figures are wall-clock.
"""

import argparse
import math
import time

import torch

from napari_unet.config import config_for_preset
from napari_unet.devices import available_cores
from napari_unet.io.sample import isbi2012
from napari_unet.training.setup import build_setup, make_loader, make_optimizer, update
from napari_unet.training.validation import validate


def updates_per_second(setup, seconds: float) -> float:
    """Run optimizer updates for ``seconds`` (after 5 warm-up updates); return their rate."""
    optimizer, _ = make_optimizer(setup.model, setup.config)
    batches = iter(make_loader(setup, 0, torch.Generator().manual_seed(0)))
    setup.model.train()
    for _ in range(5):
        update(setup, optimizer, batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        update(setup, optimizer, batches)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    image, labels = isbi2012()
    config = config_for_preset("cpu").replace(
        train={"val_slices": (24, 25, 26), "device": "cpu", "samples_per_epoch": 100_000})
    setup = build_setup(image[:27], labels[:27], config)
    cores = available_cores()
    rates = {}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        rates[threads] = updates_per_second(setup, args.seconds)
        print(f"{threads} thread{'s' if threads > 1 else ' '}: {rates[threads]:.2f} updates/s "
              f"({rates[threads] * config.train.batch_size:.1f} tiles of "
              f"{config.train.tile} px a second)")
    torch.set_num_threads(1)
    tic = time.perf_counter()
    validate(setup)
    seconds = time.perf_counter() - tic
    tiles = len(setup.train_slices) * math.prod(  # an epoch covers every training slice once
        math.ceil(side / config.train.tile) for side in image.shape[1:])
    steps = math.ceil(tiles / config.train.batch_size)
    epoch = steps / rates[1]
    share = 100 * seconds / (epoch + seconds)
    print(f"one validation (1 thread): {seconds:.1f} s; an epoch of {steps} updates: "
          f"{epoch:.0f} s; validating after every epoch costs {share:.0f}% of the time")
    if cores > 1:
        print(f"{cores} threads / 1 thread: {rates[cores] / rates[1]:.2f}x the updates a second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
