"""Prediction speed against MONAI's sliding window, and a whole ISBI 2012 stack end to end.

Our overlap-tiling and MONAI's sliding_window_inference both run the same same-padding
U-Net (MONAI's sliding window needs an output the size of its input), with the same tiles and
overlap, batch size and thread count, on the same slices, in the same process. Then the
whole 30 x 512 x 512 stack goes through what ``napari-unet predict`` does: normalisation,
overlap-tile prediction with the paper's valid-padding network, the mask and the cell
labels. MONAI is a benchmark dependency only (``pip install monai``).

Usage::

    python benchmarks/bench_predict.py [--base-channels 16] [--slices 4] [--threads 1]
"""

import argparse
import time

import numpy as np
import torch

from napari_unet.io.sample import isbi2012
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.postprocess import cell_labels, membrane_mask
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.prediction.tiles import SAME_CONTEXT, TilePlan, tile_origins


def ours(model, unit, norm, tile, batch):
    tic = time.perf_counter()
    probs = predict_probabilities(model, unit, norm, tile=tile, batch_size=batch)
    return probs, time.perf_counter() - tic


def monai(model, unit, norm, roi, overlap, batch):
    from monai.inferers import sliding_window_inference

    tic = time.perf_counter()
    inputs = torch.from_numpy(norm.network(unit)[:, None])
    with torch.no_grad():
        logits = sliding_window_inference(inputs, (roi, roi), batch, model, overlap=overlap,
                                          mode="constant", padding_mode="reflect")
    probs = torch.softmax(logits, 1)[:, 1].numpy()
    return probs, time.perf_counter() - tic


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--tile", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image, _ = isbi2012()
    norm = Normalization.of(image)
    unit = norm.unit(image)
    torch.manual_seed(0)
    same = UNet(base_channels=args.base_channels, padding="same").eval()
    plan = TilePlan.for_prediction(same, args.tile)
    tiles = args.slices * len(tile_origins(512, plan.output)) ** 2
    overlap = 2 * SAME_CONTEXT / plan.input
    print(f"same-padding U-Net, base_channels {args.base_channels}, input tiles {plan.input}, "
          f"overlap {overlap:.3f}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.slices} slices of 512 x 512")
    p_ours, t_ours = ours(same, unit[: args.slices], norm, plan.output, args.batch_size)
    print(f"  napari-unet overlap-tile   {tiles / t_ours:7.2f} tiles/s  ({t_ours:.1f} s)")
    try:
        p_monai, t_monai = monai(same, unit[: args.slices], norm, plan.input, overlap,
                                 args.batch_size)
    except ImportError:
        print("  MONAI not installed: pip install monai")
    else:
        print(f"  MONAI sliding window       {tiles / t_monai:7.2f} tiles/s  ({t_monai:.1f} s, "
              "the same windows); MONAI time / ours "
              f"{t_monai / t_ours:.2f}")
        print(f"  mean |difference| of the probabilities {np.abs(p_ours - p_monai).mean():.4f}")
    valid = UNet(base_channels=args.base_channels).eval()
    tic = time.perf_counter()
    probs = predict_probabilities(valid, norm.unit(image), norm, tile=388,
                                  batch_size=args.batch_size)
    mask, cells = membrane_mask(probs), cell_labels(probs)
    seconds = time.perf_counter() - tic
    print(f"whole stack {image.shape}, valid-padding network, 388 px output tiles: "
          f"{seconds:.1f} s end to end ({image.shape[0] / seconds:.2f} slices/s); "
          f"mask {mask.shape}, {cells.max()} cells")
    if torch.cuda.is_available():
        from napari_unet.jobs import drain
        from napari_unet.prediction.predict import predict

        gpu = UNet().cuda().eval().to(memory_format=torch.channels_last)
        for _ in range(2):
            tic = time.perf_counter()
            drain(predict(gpu, unit, norm, tile=388, batch_size=16, device="cuda",
                          autocast_dtype=torch.bfloat16))
            torch.cuda.synchronize()
            seconds = time.perf_counter() - tic
        print(f"CUDA bf16, paper's network: {30 * 4 / seconds:.0f} tiles/s (572 px input)")


if __name__ == "__main__":
    main()
