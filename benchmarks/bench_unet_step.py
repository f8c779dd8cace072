"""Time one SGD training step of the paper's U-Net in float32 against float64.

One step is what training does per tile: forward pass of the default network
(Ronneberger et al. 2015, 31 M parameters) on a 572x572 tile, pixel-weighted
cross-entropy on the 388x388 output, backward pass, SGD step (momentum 0.99, as
in the paper). The seed notebook trained in float64; this shows what that costs.

On the CPU both precisions run in the same process with the same initial
weights and data, batch 1. ``--threads`` defaults to 1 so the figures are per
core and comparable between machines and with other work running alongside;
pass the core count for whole-machine figures.

When CUDA is available it also times bf16 autocast with channels_last memory
format at batch 1, 8 and 16 and reports tiles per second against float64 at
batch 1 on the same GPU (``--no-cuda`` skips this).

Usage::

    python benchmarks/bench_unet_step.py [--steps 1] [--threads 1] [--cuda-steps 20]

A CPU step takes 15-25 s in float32 and 50-70 s in float64 on one core of a
shared 2-core machine, so by default one step per precision is timed, with no
warm-up (at that scale the first step's extra cost is small next to the noise of
a shared machine), and the run stays near two minutes; ``--steps 3`` gives a
median. On CUDA the first steps include cuDNN autotuning (``cudnn.benchmark``),
so three warm-up steps come first.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch

from napari_unet import UNet
from napari_unet.training.loss import weighted_cross_entropy


def make_batch(batch, size, out_size, generator):
    x = torch.randn(batch, 1, size, size, generator=generator)
    target = torch.randint(0, 2, (batch, out_size, out_size), generator=generator)
    weight = 1 + 9 * torch.rand(batch, out_size, out_size, generator=generator)
    return x, target, weight


def time_steps(net, batch, *, steps, warmup, dtype, device, bf16=False, channels_last=False):
    """Return the seconds of each timed training step (warm-up steps excluded)."""
    net = copy.deepcopy(net).to(device=device, dtype=dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99)
    x, target, weight = batch
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
    target, weight = target.to(device), weight.to(device=device, dtype=dtype)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if bf16
        else contextlib.nullcontext()
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    seconds = []
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = net(x)
        loss = weighted_cross_entropy(logits, target, weight)
        loss.backward()
        optimizer.step()
        sync()
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss.item()}: the timing is not representative")
    return seconds


def report(label, seconds, batch_size):
    median = statistics.median(seconds)
    print(
        f"{label:<34} median {median:8.3f} s/step  ({batch_size / median:7.2f} tiles/s; "
        f"min {min(seconds):.3f}, max {max(seconds):.3f}, n={len(seconds)})"
    )
    return median


def run_cpu(net, args, generator):
    device = torch.device("cpu")
    batch = make_batch(1, args.size, net.output_size(args.size), generator)
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch 1")
    medians = {}
    for dtype in (torch.float32, torch.float64):
        seconds = time_steps(
            net, batch, steps=args.steps, warmup=args.cpu_warmup, dtype=dtype, device=device
        )
        medians[dtype] = report(f"  {dtype}", seconds, 1)
    print(f"  float64 / float32 time ratio: {medians[torch.float64] / medians[torch.float32]:.2f}")


def run_cuda(net, args, generator):
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    print(f"CUDA, {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    out_size = net.output_size(args.size)
    base = make_batch(1, args.size, out_size, generator)
    seconds = time_steps(
        net,
        base,
        steps=args.cuda_steps,
        warmup=args.cuda_warmup,
        dtype=torch.float64,
        device=device,
    )
    reference = 1 / report("  float64, batch 1", seconds, 1)
    for batch_size in (1, 8, 16):
        batch = make_batch(batch_size, args.size, out_size, generator)
        try:
            seconds = time_steps(
                net,
                batch,
                steps=args.cuda_steps,
                warmup=args.cuda_warmup,
                dtype=torch.float32,
                device=device,
                bf16=True,
                channels_last=True,
            )
        except torch.cuda.OutOfMemoryError:
            seconds = None  # leaving the except block frees the failed step's tensors
        torch.cuda.empty_cache()
        label = f"  bf16 + channels_last, batch {batch_size}"
        if seconds is None:
            print(f"{label}: out of GPU memory")
            continue
        median = report(label, seconds, batch_size)
        print(f"    {batch_size / median / reference:.1f}x the tiles/s of float64 batch 1")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="timed CPU steps per case (1)")
    parser.add_argument("--cpu-warmup", type=int, default=0, help="untimed CPU steps first (0)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: per-core figures)")
    parser.add_argument("--cuda-steps", type=int, default=20, help="timed CUDA steps (20)")
    parser.add_argument("--cuda-warmup", type=int, default=3, help="untimed CUDA steps (3)")
    parser.add_argument("--size", type=int, default=572, help="input tile side (572)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA figures")
    args = parser.parse_args(argv)
    if min(args.steps, args.cuda_steps, args.threads) < 1:
        parser.error("--steps, --cuda-steps and --threads must be >= 1")
    if min(args.cpu_warmup, args.cuda_warmup) < 0:
        parser.error("--cpu-warmup and --cuda-warmup must be >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    net = UNet()
    try:
        net.output_size(args.size)
    except ValueError as err:
        parser.error(str(err))
    print(
        f"U-Net step: {args.size}x{args.size} -> {net.output_size(args.size)}, "
        f"{sum(p.numel() for p in net.parameters()):,} parameters, SGD momentum 0.99"
    )
    run_cpu(net, args, generator)
    if torch.cuda.is_available() and not args.no_cuda:
        run_cuda(net, args, generator)


if __name__ == "__main__":
    main()
