"""How to cut a mask: thresholds with and without gap closing, on trained models.

For each model file (trained on ISBI slices 0-23 by `bench_time_to_quality.py --keep`), predict
the validation slices 24-26 (where a cut may be chosen) and the test slices 27-29 (never
trained on, never used to choose), and score the mask cut at each threshold, as it is and with
its gaps closed (`prediction.postprocess.gap_lines`), with the challenge's scores. The first
row of each model, 0.5 without closing, is the baseline. Usage::

    python benchmarks/bench_mask_cut.py A.pt B.pt [--thresholds 0.5,0.6,0.65] [--levels 0.2,0.3]
        [--val 24,25,26] [--test 27,28,29|none]

A model may be ``isbi2012``, the bundled model (validated on 5, 15, 25: ``--val 5,15,25
--test none``).
"""

import argparse
import sys

import numpy as np


def rows_of(path: str, sets: dict[str, list[int]], thresholds: list[float],
            levels: list[float]) -> list[dict]:
    """Score one model's masks on the validation and the test slices."""
    import torch

    from napari_unet.evaluation.scores import evaluate
    from napari_unet.io.sample import isbi2012
    from napari_unet.model.files import load_model
    from napari_unet.prediction.postprocess import is_membrane
    from napari_unet.prediction.predict import predict_probabilities

    image, labels = isbi2012()
    model_file = load_model(path)
    rows = []
    for name, slices in sets.items():
        probs = predict_probabilities(model_file.build_model(),
                                      model_file.normalization.unit(image[slices]),
                                      model_file.normalization, tile=model_file.config.train.tile,
                                      device=torch.device("cpu"))
        for threshold in thresholds:
            for level in [None, *levels]:
                mask = is_membrane(probs, threshold=threshold, close_gaps=level)
                scores = evaluate(mask, labels[slices])
                rows.append({"slices": name, "threshold": threshold, "close_gaps": level,
                             "v_rand": scores["v_rand"], "v_info": scores["v_info"],
                             "pixel_error": scores["pixel_error"],
                             "membrane": float(mask.mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--thresholds", default="0.5,0.6,0.65")
    parser.add_argument("--levels", default="0.2,0.3", help="gap-closing seed levels")
    parser.add_argument("--val", default="24,25,26", help="slices the cut may be chosen on")
    parser.add_argument("--test", default="27,28,29", help="slices never trained on, or none")
    args = parser.parse_args(argv)
    sets = {name: [int(z) for z in text.split(",")]
            for name, text in (("val", args.val), ("test", args.test)) if text != "none"}
    thresholds = [float(t) for t in args.thresholds.split(",")]
    levels = [float(t) for t in args.levels.split(",")]
    import torch

    torch.set_num_threads(1)
    print(f"{'model':<12}{'slices':<7}{'cut':<22}{'V_rand':>8}{'V_info':>8}{'pixel err':>10}"
          f"{'membrane':>10}")
    means: dict[tuple, list] = {}
    for path in args.models:
        for r in rows_of(path, sets, thresholds, levels):
            cut = f"{r['threshold']:g}" + ("" if r["close_gaps"] is None
                                           else f", closed at {r['close_gaps']:g}")
            print(f"{path.rsplit('/', 1)[-1]:<12}{r['slices']:<7}{cut:<22}{r['v_rand']:>8.3f}"
                  f"{r['v_info']:>8.3f}{r['pixel_error']:>10.3f}{r['membrane']:>10.3f}",
                  flush=True)
            means.setdefault((r["slices"], cut), []).append(
                (r["v_rand"], r["v_info"], r["pixel_error"]))
    print(f"\nmeans over {len(args.models)} models")
    for (slices, cut), values in means.items():
        v_rand, v_info, error = np.mean(values, axis=0)
        print(f"{'':<12}{slices:<7}{cut:<22}{v_rand:>8.3f}{v_info:>8.3f}{error:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
