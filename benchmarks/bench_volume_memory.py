"""Benchmark the peak memory of blockwise volume prediction as the volume grows.

    .venv/bin/python benchmarks/bench_volume_memory.py [--slices 2 20 200] [--side 512]

Writes synthetic float32 zarr volumes of ``slices x side x side`` pixels and a
tiny U-Net (depth 2, 2 base channels: memory, not speed, is measured), then
runs `napari_unet.prediction.volume.predict_volume` on each volume in a fresh process so
that each peak RSS (``ru_maxrss``) belongs to one run. Prints, per size, the
volume's size, the RSS once everything is imported, the peak RSS, the growth
between the two and the time, then the ratio of the largest to the smallest
run. Blockwise prediction keeps a few blocks in memory whatever the volume's
size, so the peak should stay flat (ratio ~1x) while the volume grows 100x.
Torch is held to one thread.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import zarr

from napari_unet.config import Config
from napari_unet.jobs import drain
from napari_unet.model.files import ModelFile, make_model, save_model
from napari_unet.model.normalization import Normalization
from napari_unet.prediction.volume import predict_volume

MIB = 2**20


def child(model: str, source: str, output: str) -> None:
    """Predict one volume and print this process's memory figures as JSON."""
    torch.set_num_threads(1)
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    drain(predict_volume(model, source, output))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"baseline": baseline, "peak": peak, "seconds": seconds}))


def write_volume(path: Path, slices: int, side: int) -> None:
    """Write a random float32 volume slice by slice (never whole in memory)."""
    array = zarr.create_array(str(path), shape=(slices, side, side), chunks=(1, side, side),
                              dtype="float32")
    rng = np.random.default_rng(0)
    for z in range(slices):
        array[z] = rng.random((side, side), dtype=np.float32)


def save_tiny(path: Path) -> Path:
    config = Config().replace(model={"depth": 2, "base_channels": 2})
    torch.manual_seed(0)
    return save_model(path, ModelFile(config, Normalization(0.0, 1.0, 0.5, 0.29),
                                      make_model(config).state_dict()))


def measure(folder: Path, model: Path, slices: int, side: int) -> dict:
    source, output = folder / f"in-{slices}.zarr", folder / f"out-{slices}.zarr"
    write_volume(source, slices, side)
    run = subprocess.run([sys.executable, __file__, "--child", str(model), str(source),
                          str(output)], capture_output=True, text=True, check=True)
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    return {"slices": slices, "volume": slices * side * side * 4, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, nargs="+", default=[2, 20, 200])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"{'slices':>6} {'volume MiB':>10} {'baseline MiB':>12} {'peak MiB':>9} "
          f"{'growth MiB':>10} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = save_tiny(folder / "tiny.pt")
        runs = []
        for slices in args.slices:
            r = measure(folder, model, slices, args.side)
            runs.append(r)
            print(f"{slices:>6} {r['volume'] / MIB:>10.0f} {r['baseline'] / MIB:>12.0f} "
                  f"{r['peak'] / MIB:>9.0f} {(r['peak'] - r['baseline']) / MIB:>10.0f} "
                  f"{r['seconds']:>8.1f}", flush=True)
    small, large = runs[0], runs[-1]
    print(f"volume x{large['volume'] / small['volume']:.0f}: peak RSS "
          f"x{large['peak'] / small['peak']:.2f}, growth over baseline "
          f"x{(large['peak'] - large['baseline']) / (small['peak'] - small['baseline']):.2f}")


if __name__ == "__main__":
    main()
