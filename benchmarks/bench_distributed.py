"""Data-parallel training on the CPU: one process against two, and batch norm synced or not.

Builds the `cpu` preset's run (same padding, batch norm, 16 channels, 192 px
tiles, batch 4) on ISBI 2012 slices 0-5 and runs a few optimizer updates three
ways: one process with every core; two gloo processes with half the cores each
and every batch split between them, batch norm over the whole batch (what
`napari-unet train --nproc 2` runs); and two processes whose batch norm sees
only their own half of the batch (what plain BatchNorm2d does under
DistributedDataParallel). For each it prints the median seconds per update
after the first, and how far the first update's gradient is from the exact one
(the same batch in float64 in one process): the largest relative error
``|g - g_exact| / |g_exact|`` over the parameters.

Usage::

    python benchmarks/bench_distributed.py [--steps 12] [--batch 4]
"""

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from napari_unet.config import config_for_preset
from napari_unet.devices import available_cores, using_cpu_threads
from napari_unet.io.sample import isbi2012
from napari_unet.training.distributed import GroupBatchNorm, Solo, joined
from napari_unet.training.loss import loss_terms
from napari_unet.training.setup import build_setup, make_optimizer


def setup_of(steps: int, batch: int):
    image, labels = isbi2012()
    config = config_for_preset("cpu", device="cpu").replace(train={
        "device": "cpu", "samples_per_epoch": steps * batch, "batch_size": batch,
        "val_slices": (5,)})
    return build_setup(image[:6], labels[:6], config)


def run(world, steps: int, batch: int) -> tuple[list[float], dict]:
    """Return the seconds of each update after the first, and the first update's gradient."""
    setup = setup_of(steps, batch)
    world.prepare(setup)
    optimizer, _ = make_optimizer(setup.model, setup.config)
    batches = world.batches(setup, 0, torch.Generator().manual_seed(0))
    setup.model.train()
    times, first = [], None
    with using_cpu_threads(setup.device, processes=world.local_size):
        for _ in range(steps):
            tic = time.perf_counter()
            world.update(setup, optimizer, batches)
            if first is None:
                first = {k: p.grad.double().clone() for k, p in setup.model.named_parameters()}
            else:
                times.append(time.perf_counter() - tic)
    return times, first


def exact_gradient(steps: int, batch: int) -> dict:
    """Return the first update's gradient in float64, in one process."""
    setup = setup_of(steps, batch)
    model = setup.model.double().train()
    items = [setup.samples[i] for i in range(batch)]
    image = torch.stack([item["image"] for item in items]).double()
    target = torch.stack([item["target"] for item in items])
    weights = torch.stack([item["weights"] for item in items]).double()
    total, annotated = loss_terms(model(image), target, weights)
    (total / annotated).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _process(rank, port, steps, batch, synced, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    if not synced:  # what plain BatchNorm2d does: each process's own half of the batch
        GroupBatchNorm.convert = staticmethod(lambda module: module)
    with joined("cpu") as world:
        times, gradient = run(world, steps, batch)
    if rank == 0:
        torch.save({"times": times, "gradient": gradient}, out)


def two_processes(steps: int, batch: int, synced: bool) -> tuple[list[float], dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rank0.pt"
        mp.start_processes(_process, args=(port, steps, batch, synced, out), nprocs=2,
                           start_method="spawn")
        result = torch.load(out)
    return result["times"], result["gradient"]


def error(gradient: dict, exact: dict) -> float:
    return max(((gradient[k] - exact[k]).norm() / exact[k].norm()).item() for k in exact)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    print(f"cpu preset, ISBI 2012 slices 0-5, batch {args.batch}, {args.steps} updates, "
          f"{available_cores()} cores")
    exact = exact_gradient(args.steps, args.batch)
    ways = [("1 process", lambda: run(Solo(), args.steps, args.batch)),
            ("2 processes, batch norm synced",
             lambda: two_processes(args.steps, args.batch, True)),
            ("2 processes, batch norm per process",
             lambda: two_processes(args.steps, args.batch, False))]
    for name, way in ways:
        times, gradient = way()
        print(f"  {name + ':':<37} {statistics.median(times):.2f} s/update, first gradient "
              f"{error(gradient, exact):.2g} from the exact one")


if __name__ == "__main__":
    main()
