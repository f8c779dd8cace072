"""Training throughput on GPUs: the paper's network, 572x572 input tiles, bf16 and channels_last.

Runs the real training loop (`napari_unet.training.train.train`) on the bundled
ISBI 2012 sample with the `paper` preset on CUDA (bf16 autocast, channels_last,
DataLoader workers), without validation, and reports tiles per second over the
updates after a warm-up. Started by torchrun it trains data-parallel
(DistributedDataParallel over NCCL) and also checks that every GPU holds the
same weights at the end. The batch is per GPU: N GPUs train a global batch of
N times ``--batch``.

Usage::

    python benchmarks/gpu.py [--batch 1] [--steps 30] [--warmup 5]
    torchrun --standalone --nproc-per-node N benchmarks/gpu.py [--batch 1] ...

Not measured in this repository's docs: the machines it was written on have no
GPU (docs/training.md, "Several GPUs or processes").
"""

import argparse
import time

import torch
import torch.distributed as dist

from napari_unet.config import config_for_preset
from napari_unet.io.sample import isbi2012
from napari_unet.training.distributed import joined
from napari_unet.training.progress import Event
from napari_unet.training.train import train


def throughput(world, batch: int, steps: int, warmup: int) -> float:
    """Return the tiles per second of the whole group over ``steps`` updates after ``warmup``."""
    image, labels = isbi2012()
    config = config_for_preset("paper", device="cuda").replace(train={
        "device": "cuda", "precision": "bfloat16", "batch_size": batch * world.size,
        "val_slices": (), "epochs": 1, "samples_per_epoch": batch * world.size * (steps + warmup),
        "patience": None})
    started = None
    for progress in train(image, labels, config, world=world):
        if progress.event is Event.STEP and progress.step == warmup:
            torch.cuda.synchronize()
            started = time.perf_counter()
    torch.cuda.synchronize()
    return steps * batch * world.size / (time.perf_counter() - started)


def same_weights(world, model_state) -> float:
    """Return the largest difference between this GPU's weights and GPU 0's (all GPUs)."""
    worst = torch.zeros((), device="cuda")
    for value in model_state.values():
        mine = value.to("cuda", torch.float32)
        first = mine.clone()
        dist.broadcast(first, 0)
        worst = torch.maximum(worst, (mine - first).abs().max())
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return worst.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="tiles per GPU and update")
    parser.add_argument("--steps", type=int, default=30, help="timed updates")
    parser.add_argument("--warmup", type=int, default=5, help="updates before timing")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU")
    with joined("cuda") as world:
        rate = throughput(world, args.batch, args.steps, args.warmup)
        if world.main:
            name = torch.cuda.get_device_name()
            print(f"{world.size} x {name}: paper network, 572x572 input, batch {args.batch} "
                  f"per GPU, bf16, channels_last: {rate:.1f} tiles/s "
                  f"({rate / world.size:.1f} per GPU), peak memory "
                  f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        if world.size > 1:
            worst = same_weights(world, world.network.module.state_dict())
            if world.main:
                print(f"largest weight difference between GPUs: {worst:.3g} (expected 0)")


if __name__ == "__main__":
    main()
