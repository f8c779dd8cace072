"""Does fine-tuning help? Pretrained vs from scratch on two annotated slices, equal minutes.

A model is pretrained on ISBI 2012 slices 0-14 only (the default CPU preset, validating on
13 and 14). Slices 15-29 stand for a new stack: two of them (``--annotated``, 15 and 22)
get their true labels, as a user's two corrected slices would, and the other 13 are scored
with the project's ISBI metric. Compared, each on one core:

- the pretrained model as it is;
- a model trained from scratch on the two slices for ``--minutes``;
- the pretrained model fine-tuned on the two slices for the same minutes;
- Correct-and-retrain as the widget runs it: the pretrained model's mask of the new stack
  with the two slices corrected, retrained with the widget's default epochs, minutes and
  learning rate (`napari_unet.io.labels.retraining_labels`).

Usage::

    python benchmarks/bench_fine_tuning.py [--pretrain-minutes 10] [--minutes 3]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_time_to_quality import test_scores

PRETRAIN = list(range(15))
NEW = list(range(15, 30))


def scores_of(model_path: Path, image, truth) -> dict:
    """Predict with a model file and score against the truth (the model's own threshold)."""
    from napari_unet.model.files import load_model
    from napari_unet.prediction.predict import predict_probabilities

    model_file = load_model(model_path)
    probs = predict_probabilities(model_file.build_model(), model_file.normalization.unit(image),
                                  model_file.normalization, tile=model_file.config.train.tile)
    result = test_scores(probs, truth, model_file.threshold, model_file.close_gaps)
    return {k: result[k] for k in ("v_rand", "v_info", "pixel_error", "v_rand_max",
                                   "membrane_fraction")} | {"threshold": model_file.threshold}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-minutes", type=float, default=10.0)
    parser.add_argument("--minutes", type=float, default=3.0,
                        help="minutes of scratch and fine-tuning training (equal)")
    parser.add_argument("--annotated", default="15,22", help="the two annotated new slices")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from napari_unet.config import RETRAIN_DEFAULTS, config_for_preset
    from napari_unet.io.labels import retraining_labels
    from napari_unet.io.sample import isbi2012
    from napari_unet.jobs import drain
    from napari_unet.prediction.postprocess import membrane_mask
    from napari_unet.prediction.predict import predict_probabilities
    from napari_unet.training.train import train

    image, labels = isbi2012()
    annotated = [int(z) - NEW[0] for z in args.annotated.split(",")]
    scored = [i for i in range(len(NEW)) if i not in annotated]
    new_image, new_truth = image[NEW], labels[NEW]
    sparse = np.zeros_like(new_truth)
    sparse[annotated] = new_truth[annotated]
    base = config_for_preset("cpu", device="cpu").replace(train={"device": "cpu"})
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pre = tmp / "pretrained.pt"
        drain(train(image[PRETRAIN], labels[PRETRAIN],
                    base.replace(train={"minutes": args.pretrain_minutes, "val_slices": (13, 14)}),
                    output=pre))
        rows["pretrained (slices 0-14)"] = scores_of(pre, new_image[scored], new_truth[scored])
        equal = base.replace(train={"minutes": args.minutes, "epochs": 10_000,
                                    "val_slices": (), "patience": None})
        for name, init in (("scratch on 2 slices", None), ("fine-tuned on 2 slices", pre)):
            out = tmp / f"{len(rows)}.pt"
            drain(train(new_image, sparse, equal, output=out, init=init))
            rows[f"{name}, {args.minutes:g} min"] = scores_of(out, new_image[scored],
                                                             new_truth[scored])
        # Correct and retrain: the pretrained mask of the new stack, two slices corrected.
        from napari_unet.model.files import load_model

        model_file = load_model(pre)
        probs = predict_probabilities(model_file.build_model(),
                                      model_file.normalization.unit(new_image),
                                      model_file.normalization, tile=model_file.config.train.tile)
        mask = membrane_mask(probs, threshold=model_file.threshold,
                             close_gaps=model_file.close_gaps)
        mask[annotated] = new_truth[annotated]
        retrain_labels = retraining_labels(mask, annotated, None)
        widget = model_file.config.replace(train={**RETRAIN_DEFAULTS, "device": "cpu",
                                                  "val_slices": ()})
        out = tmp / "retrained.pt"
        drain(train(new_image, retrain_labels, widget, output=out, init=pre))
        rows["Correct and retrain (widget defaults)"] = scores_of(out, new_image[scored],
                                                                  new_truth[scored])
    print(f"\nScored on the 13 new slices other than {args.annotated} (ISBI metric, each model "
          "at its own threshold); one core.")
    keys = ("v_rand", "v_info", "pixel_error", "v_rand_max", "membrane_fraction", "threshold")
    print(f"{'':<40}" + "".join(f"{k:>18}" for k in keys))
    for name, row in rows.items():
        print(f"{name:<40}" + "".join(f"{row[k]:>18.4f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
