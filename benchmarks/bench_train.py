"""Training throughput with the real data pipeline, and the data pipeline's share of a step.

Builds the training run `napari-unet train` would build on the bundled ISBI 2012
sample (paper's network, 572x572 input tiles, weight maps, augmentation) and
times, per step, the wait for the next batch (data) and the forward, loss,
backward and SGD update (compute). On the CPU it compares float32 with the
seed notebook's float64 at batch 1 in the same process; on CUDA it times
bf16 autocast with channels_last and DataLoader workers at several batch sizes.

Usage::

    python benchmarks/bench_train.py [--steps 2] [--threads 1] [--base-channels 64]

A full-size CPU step takes tens of seconds here, so few steps are timed.
"""

import argparse
import statistics
import time

import torch

from napari_unet.config import Config
from napari_unet.io.sample import isbi2012
from napari_unet.training.setup import build_setup, loss_of_batch, make_loader, make_optimizer


def timed_steps(setup, optimizer, steps, dtype=None):
    """Return lists of (data seconds, compute seconds) per step."""
    batches = iter(make_loader(setup, 0, torch.Generator().manual_seed(0)))
    data, compute = [], []
    for _ in range(steps):
        tic = time.perf_counter()
        batch = next(batches)
        if dtype is not None:
            batch = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
        toc = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_of_batch(setup, batch).backward()
        optimizer.step()
        if setup.device.type == "cuda":
            torch.cuda.synchronize()
        data.append(toc - tic)
        compute.append(time.perf_counter() - toc)
    return data, compute


def report(name, batch, data, compute):
    step = statistics.median(d + c for d, c in zip(data, compute, strict=True))
    share = statistics.median(data) / step
    print(f"  {name:<28} {batch / step:8.3f} tiles/s  {step:8.3f} s/step  "
          f"data {100 * share:5.1f}% of the step")
    return batch / step


def run(image, labels, config, steps, dtype=None, warmup=0):
    setup = build_setup(image, labels, config)
    if dtype is not None:
        setup.model.to(dtype)
    optimizer, _ = make_optimizer(setup.model, config)
    if warmup:
        timed_steps(setup, optimizer, warmup, dtype)
    return timed_steps(setup, optimizer, steps, dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--cuda-steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, labels = isbi2012()
    base = Config().replace(model={"base_channels": args.base_channels},
                            train={"device": "cpu", "val_slices": (5, 15, 25)})
    print(f"ISBI 2012, 572x572 input tiles, base_channels {args.base_channels}, "
          f"{args.threads} CPU thread(s), {args.steps} step(s) each")
    f32 = report("CPU float32, batch 1", 1, *run(image, labels, base, args.steps))
    f64 = report("CPU float64 (seed), batch 1", 1,
                 *run(image, labels, base, max(1, args.steps // 2), dtype=torch.float64))
    print(f"  float32 / float64 throughput: {f32 / f64:.2f}x")
    if not torch.cuda.is_available():
        print("no CUDA GPU: GPU figures skipped")
        return
    gpu = base.replace(train={"device": "cuda"})
    reference = report("CUDA float64, batch 1", 1,
                       *run(image, labels, gpu.replace(train={"precision": "float32"}), 5,
                            dtype=torch.float64, warmup=2))
    for batch in (1, 8, 16):
        config = gpu.replace(train={"batch_size": batch, "precision": "bfloat16",
                                    "samples_per_epoch": batch * (args.cuda_steps + 5)})
        rate = report(f"CUDA bf16 channels_last, b{batch}", batch,
                      *run(image, labels, config, args.cuda_steps, warmup=5))
        print(f"    {rate / reference:.1f}x float64 batch 1")


if __name__ == "__main__":
    main()
