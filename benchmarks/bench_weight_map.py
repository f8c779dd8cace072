"""Benchmark the U-Net weight map (eq. 2) against the naive per-cell method.

    .venv/bin/python benchmarks/bench_weight_map.py [--slices 10] [--naive-slices 1]

Prints, for ISBI 2012 label slices (512 x 512, interior = labels == 2): the median
time per slice of `napari_unet.weight_map`; the time of the naive method (one
full-image Euclidean distance transform per cell, two smallest kept) on the
first slices, with the ratio; one full-image distance transform as a yardstick of
the machine's speed; and the peak extra memory of each method on one slice.
Wall-clock and CPU (thread) times are both shown: on a shared machine the CPU
time is the steadier figure. Numerical libraries are held to one thread.

The first call of a process also loads numba and the compiled passes of the weight
map; that cost is printed apart, not in the median: once in a fresh process with
an empty numba cache (the JIT compile, paid once per machine), then again with
that cache filled.
"""

import os

# One thread, set before numpy loads its libraries: the target is one core.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

import cv2
import numpy as np
from scipy import ndimage as ndi

from napari_unet.io.labels import INTERIOR
from napari_unet.io.sample import isbi2012
from napari_unet.training.weights import weight_map

cv2.setNumThreads(1)  # the weight map labels cells with OpenCV

W0, SIGMA = 10.0, 5.0
CROSS = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def naive_weight_map(interior: np.ndarray, *, stack: bool = False) -> np.ndarray:
    """Eq. 2 by its definition, as in the tests; ``stack`` keeps every distance map."""
    cells, n_cells = ndi.label(interior, structure=CROSS)
    maps = (ndi.distance_transform_edt(cells != cell) for cell in range(1, n_cells + 1))
    if stack:
        two = np.partition(np.stack(list(maps)), 1, axis=0)[:2]
        d1, d2 = two[0], two[1]
    else:
        d1 = np.full(interior.shape, np.inf)
        d2 = np.full(interior.shape, np.inf)
        for d in maps:
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
    n_interior = interior.sum()
    w_c = np.where(
        interior,
        interior.size / (2 * n_interior),
        interior.size / (2 * (interior.size - n_interior)),
    )
    border = W0 * np.exp(-((d1 + d2) ** 2) / (2 * SIGMA**2))
    return w_c + np.where(interior, 0.0, border)


def timed(function, *args, repeat: int = 1) -> tuple[float, float]:
    """Best wall-clock and CPU seconds of ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        function(*args)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return min(wall), min(cpu)


FIRST_CALL = """
import time
import numpy as np
from napari_unet.training.weights import weight_map
mask = np.ones((64, 64), bool)
mask[:, 30:34] = False
start = time.perf_counter()
weight_map(mask)
print(time.perf_counter() - start)
"""


def first_call_seconds(cache_dir: str) -> float:
    """Seconds of the first `weight_map` call of a fresh process using ``cache_dir``."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    run = subprocess.run(
        [sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True, check=True
    )
    return float(run.stdout)


def peak_memory(function, *args) -> float:
    """Peak bytes allocated while ``function`` runs, beyond what existed before."""
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=10, help="slices timed (fast method)")
    parser.add_argument("--naive-slices", type=int, default=1, help="slices timed (naive)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    labels = isbi2012()[1]
    picks = np.linspace(0, len(labels) - 1, args.slices).round().astype(int)
    masks = [labels[z] == INTERIOR for z in picks]
    weight_map(masks[0])  # warm up

    fast = [timed(weight_map, mask, repeat=args.repeat) for mask in masks]
    fast_wall = [wall for wall, _ in fast]
    fast_cpu = [cpu for _, cpu in fast]
    edt = timed(ndi.distance_transform_edt, ~masks[0], repeat=args.repeat)
    print(f"ISBI 2012 slices {picks.tolist()}, 512 x 512, w0={W0}, sigma={SIGMA}, one thread")
    with tempfile.TemporaryDirectory() as cache_dir:
        compile_time, cached_time = (first_call_seconds(cache_dir) for _ in range(2))
    print(
        f"first call of a process (not in the median): {1e3 * compile_time:.0f} ms with an "
        f"empty numba cache (JIT compile, once per machine), {1e3 * cached_time:.0f} ms with "
        "the cache (import numba, load)"
    )
    print(
        f"fast  weight_map: median {1e3 * statistics.median(fast_wall):7.1f} ms wall, "
        f"{1e3 * statistics.median(fast_cpu):7.1f} ms CPU per slice "
        f"(range {1e3 * min(fast_cpu):.1f}-{1e3 * max(fast_cpu):.1f} ms CPU)"
    )
    print(
        f"yardstick: one scipy distance transform of a slice {1e3 * edt[0]:.1f} ms wall, "
        f"{1e3 * edt[1]:.1f} ms CPU; the weight map costs "
        f"{statistics.median(fast_cpu) / edt[1]:.2f} of them"
    )

    for index in range(min(args.naive_slices, len(masks))):
        mask = masks[index]
        expected = naive_weight_map(mask)
        worst = np.max(np.abs(weight_map(mask) / expected - 1))
        wall, cpu = timed(naive_weight_map, mask)
        n_cells = ndi.label(mask, structure=CROSS)[1]
        print(
            f"naive slice {picks[index]} ({n_cells} cells): {1e3 * wall:7.0f} ms wall, "
            f"{1e3 * cpu:7.0f} ms CPU; speed-up {wall / fast_wall[index]:.0f}x wall, "
            f"{cpu / fast_cpu[index]:.0f}x CPU; max relative difference {worst:.1e}"
        )

    mask = masks[0]
    print(f"peak extra memory on slice {picks[0]} (output alone: {mask.size * 4 / 1e6:.1f} MB):")
    print(f"  fast weight_map             {peak_memory(weight_map, mask) / 1e6:8.1f} MB")
    running = peak_memory(naive_weight_map, mask)
    print(f"  naive, running two smallest {running / 1e6:8.1f} MB")
    stacked = peak_memory(lambda m: naive_weight_map(m, stack=True), mask)
    print(f"  naive, all maps stacked     {stacked / 1e6:8.1f} MB")


if __name__ == "__main__":
    main()
