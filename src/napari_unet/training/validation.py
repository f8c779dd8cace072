"""The validation pass of a training run: loss and ISBI scores, and the exported threshold.

`validate` predicts the validation slices with the network being trained,
scores the masks at each of `THRESHOLDS` and picks the threshold a mask is
exported with (`pick_threshold`, unless the config sets one).
"""

import numpy as np

from napari_unet.evaluation.scores import evaluate, evaluate_thresholds
from napari_unet.prediction.postprocess import is_membrane
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.training.loss import probability_loss
from napari_unet.training.samples import class_targets
from napari_unet.training.setup import Setup

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Membrane thresholds tried at validation (the challenge's sweep without 0 and 1)."""


def pick_threshold(per_threshold: list[dict]) -> dict:
    """Return the scores of the threshold a mask is exported with.

    The one with the best mean of V_rand and pixel accuracy (1 - pixel error),
    the closest to 0.5 on a tie. V_rand alone prefers thick membranes (a thick
    line never has a gap), pixel error alone thin ones with gaps; a weighted
    loss shifts the probabilities towards membrane, so 0.5 is not always right.

    Parameters
    ----------
    per_threshold : list of dict
        `napari_unet.evaluation.scores.evaluate_thresholds`'s ``per_threshold``.

    Returns
    -------
    scores : dict
        One of them (with its ``threshold``).
    """
    def key(scores):
        v_rand = scores["v_rand"] if scores["v_rand"] is not None else 0.0
        return (v_rand + 1.0 - scores["pixel_error"], -abs(scores["threshold"] - 0.5))
    return max(per_threshold, key=key)


def validate(setup: Setup) -> tuple[dict, np.ndarray | None]:
    """Predict the validation slices; return their loss and ISBI scores, and one prediction.

    ``pixel_error``, ``v_rand`` and ``v_info`` are those of the mask exported
    at ``threshold`` (the config's ``train.threshold``, or `pick_threshold`'s);
    (gaps closed when ``train.close_gaps`` says so);
    ``v_rand_max`` and ``v_info_max`` are the challenge's best over `THRESHOLDS`; ``sweep`` lists
    ``[threshold, v_rand, v_info, pixel_error]`` for each of them. Without
    validation slices a run exports at the config's threshold, or else keeps the
    threshold of the model it started from.
    """
    if not setup.val_slices:
        return ({} if setup.threshold is None else {"threshold": setup.threshold}), None
    t, z = setup.config.train, setup.val_slices
    probs = predict_probabilities(setup.model, setup.unit_image[z], setup.normalization,
                                  tile=t.tile, batch_size=max(1, t.batch_size),
                                  device=setup.device, autocast_dtype=setup.amp)
    labels, weights = setup.labels[z], np.stack([setup.weights[i] for i in z])
    record = {"val_loss": probability_loss(probs, class_targets(labels), weights)}
    fixed = t.threshold
    sweep = evaluate_thresholds(probs, labels,
                                sorted({*THRESHOLDS, *([] if fixed is None else [fixed])}))
    chosen = (pick_threshold(sweep["per_threshold"]) if fixed is None
              else next(s for s in sweep["per_threshold"] if s["threshold"] == fixed))
    if t.close_gaps is not None:
        mask = is_membrane(probs, threshold=chosen["threshold"], close_gaps=t.close_gaps)
        chosen = {**evaluate(mask, labels), "threshold": chosen["threshold"]}
    record.update({k: chosen[k] for k in ("pixel_error", "v_rand", "v_info", "threshold")},
                  v_rand_max=sweep["v_rand_max"], v_info_max=sweep["v_info_max"],
                  sweep=[[s["threshold"], s["v_rand"], s["v_info"], s["pixel_error"]]
                         for s in sweep["per_threshold"]])
    return record, probs[0]
