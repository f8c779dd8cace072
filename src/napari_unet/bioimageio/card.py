"""What a package tells a person: the documentation (with its Validation section) and the cover.

The scores in the Validation section are the model file's own (its latest
validation record, on its held-out slices) when it has them; otherwise they
are computed here on slices of the bundled ISBI 2012 sample.
"""

from dataclasses import dataclass

import numpy as np

from napari_unet import __version__
from napari_unet.evaluation.scores import evaluate
from napari_unet.model.files import ModelFile
from napari_unet.prediction.postprocess import is_membrane
from napari_unet.prediction.predict import predict_probabilities

RONNEBERGER = ("Ronneberger, O., Fischer, P., Brox, T. (2015). U-Net: Convolutional Networks for "
               "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, 234-241.",
               "10.1007/978-3-319-24574-4_28")
ARGANDA = ("Arganda-Carreras, I., Turaga, S. C., Berger, D. R., et al. (2015). Crowdsourcing the "
           "creation of image segmentation algorithms for connectomics. Frontiers in "
           "Neuroanatomy 9:142 (the ISBI 2012 challenge data).", "10.3389/fnana.2015.00142")
CITATIONS = (RONNEBERGER, ARGANDA)
"""(text, DOI) of the works a package cites: the network, and the data of its test tensors."""

PREDICTION_TILE = 256
"""The smallest output tile of the cover's and the scores' predictions (few tiles, fast)."""
FALLBACK_SLICES = (5, 15, 25)
"""ISBI 2012 slices scored when a model names no validation slices of its own."""


@dataclass(frozen=True)
class Validation:
    """Validation scores of a model, and where they come from.

    Attributes
    ----------
    pixel_error, v_rand, v_info : float or None
        The ISBI 2012 challenge's scores (docs/metrics.md).
    threshold : float
        The membrane threshold they were measured at.
    slices : tuple of int or None
        The slices scored (None: not recorded).
    stored : bool
        True: the model's own validation during training; False: computed at
        export on the bundled ISBI 2012 sample.
    epoch, step : int or None
        When a stored validation was made.
    """

    pixel_error: float | None
    v_rand: float | None
    v_info: float | None
    threshold: float
    slices: tuple[int, ...] | None
    stored: bool
    epoch: int | None = None
    step: int | None = None


def stored_validation(model_file: ModelFile) -> Validation | None:
    """Return the model's latest validation scores, or None when its history has none."""
    for record in reversed(model_file.history):
        if record.get("v_rand") is not None or record.get("pixel_error") is not None:
            slices = model_file.config.train.val_slices
            return Validation(
                pixel_error=_float(record.get("pixel_error")), v_rand=_float(record.get("v_rand")),
                v_info=_float(record.get("v_info")),
                threshold=float(record.get("threshold") or model_file.threshold),
                slices=None if slices is None else tuple(slices), stored=True,
                epoch=record.get("epoch"), step=record.get("step"))
    return None


def _float(value) -> float | None:
    return None if value is None else float(value)


def validation_slices(model_file: ModelFile, depth: int) -> tuple[int, ...]:
    """Return the sample slices to score: the model's validation slices, else `FALLBACK_SLICES`."""
    chosen = model_file.config.train.val_slices
    if chosen and all(0 <= z < depth for z in chosen):
        return tuple(sorted(chosen))
    return FALLBACK_SLICES


def computed_validation(model_file: ModelFile, image: np.ndarray, labels: np.ndarray,
                        slices: tuple[int, ...]) -> Validation:
    """Predict and score slices of an annotated stack (the bundled sample) with the model.

    Parameters
    ----------
    model_file : ModelFile
    image, labels : (Z, Y, X) ndarray
        The raw stack and its annotation labels.
    slices : tuple of int

    Returns
    -------
    validation : Validation
    """
    norm = model_file.normalization
    unit = norm.unit(image[list(slices)])
    prob = predict_probabilities(model_file.build_model(), unit, norm,
                                 tile=max(model_file.config.train.tile, PREDICTION_TILE))
    scores = evaluate(prob, labels[list(slices)], threshold=model_file.threshold)
    return Validation(pixel_error=scores["pixel_error"], v_rand=scores["v_rand"],
                      v_info=scores["v_info"], threshold=model_file.threshold,
                      slices=tuple(slices), stored=False)


def cover_image(unit: np.ndarray, probabilities: np.ndarray, membrane: np.ndarray) -> np.ndarray:
    """Put input, P(membrane) and the mask side by side, in a 2:1 grey image.

    Parameters
    ----------
    unit, probabilities : (Y, X) float ndarray
        The input mapped to [0, 1] and P(membrane) (in [0, 1]).
    membrane : (Y, X) bool ndarray
        The mask (True: membrane, shown black like the input's membranes).

    Returns
    -------
    cover : (H, 2 H) uint8 ndarray
        Three portrait crops from the centre, 6-pixel white gaps between them.
    """
    height = min(unit.shape[0], 384)
    panel = (2 * height - 12) // 3
    top = (unit.shape[0] - height) // 2
    left = max(0, (unit.shape[1] - panel) // 2)
    crop = (slice(top, top + height), slice(left, left + panel))
    panels = [unit[crop], 1.0 - probabilities[crop], np.where(membrane[crop], 0.0, 1.0)]
    gap = np.ones((height, 6))
    canvas = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    return np.round(np.clip(canvas, 0.0, 1.0) * 255).astype(np.uint8)


def cover_of(model_file: ModelFile, image_slice: np.ndarray) -> np.ndarray:
    """Predict one slice (the whole slice, overlap-tiled) and return its `cover_image`."""
    norm = model_file.normalization
    unit = norm.unit(image_slice)
    prob = predict_probabilities(model_file.build_model(), unit, norm,
                                 tile=max(model_file.config.train.tile, PREDICTION_TILE))
    membrane = is_membrane(prob, threshold=model_file.threshold,
                           close_gaps=model_file.close_gaps)
    return cover_image(unit, prob, membrane)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def validation_section(validation: Validation) -> str:
    """Return the "## Validation" section: the scores, what they rest on, how to redo it."""
    slices = ("not recorded" if validation.slices is None
              else ", ".join(str(z) for z in validation.slices))
    if validation.stored:
        when = " ".join(part for part in (
            f"epoch {validation.epoch}" if validation.epoch is not None else "",
            f"step {validation.step}" if validation.step is not None else "") if part)
        source = (f"The model's own validation during training ({when or 'its latest'}), on "
                  f"its held-out validation slices of the training stack: {slices}.")
    else:
        source = ("Computed at export by napari-unet on slices "
                  f"{slices} of the ISBI 2012 training volume (the bundled sample); the "
                  "model's history holds no validation, so these slices may have been "
                  "seen in training and the scores may be optimistic.")
    return f"""## Validation

{source}

| metric | value |
| --- | --- |
| V_rand (foreground-restricted Rand, higher is better) | {_score(validation.v_rand)} |
| V_info (foreground-restricted information, higher is better) | {_score(validation.v_info)} |
| pixel error (lower is better) | {_score(validation.pixel_error)} |
| threshold of the mask | {validation.threshold:.2f} |

The scores are those of the ISBI 2012 challenge (Arganda-Carreras et al. 2015), computed per
slice on the membrane mask and averaged. To validate the model on your own data, annotate a
few slices that were not used for training (membrane and interior) and score its mask:

```bash
napari-unet predict MODEL.zip images.tif -o mask.tif
napari-unet evaluate mask.tif labels.tif
```
"""


def _training_table(model_file: ModelFile) -> str:
    t, w, a = model_file.config.train, model_file.config.weights, model_file.config.augment
    rows = [
        ("optimizer", f"{t.optimizer}, learning rate {t.lr:g}"
         + (f", momentum {t.momentum:g}" if t.optimizer == "sgd" else "")
         + (f", weight decay {t.weight_decay:g}" if t.weight_decay else "")),
        ("schedule", t.schedule),
        ("epochs (at most)", f"{t.epochs}" + (f", {t.minutes:g} minutes" if t.minutes else "")),
        ("tile (output side) and batch", f"{t.tile} px, batch {t.batch_size}"
         + (f" x {t.accumulate} accumulated" if t.accumulate > 1 else "")),
        ("loss", "pixel-wise cross-entropy weighted by the map of eq. 2 of the paper: "
         f"w0 {w.w0:g}, sigma {w.sigma:g}, class balance {'on' if w.balance else 'off'}, "
         f"membrane weight {w.membrane_weight:g}"),
        ("augmentation", f"strength {a.strength:g}; flips p {a.flip_p:g}, affine p "
         f"{a.affine_p:g}, elastic p {a.elastic_p:g}, brightness/contrast p "
         f"{a.brightness_contrast_p:g}"),
        ("validation slices", "about one annotated slice in ten" if t.val_slices is None
         else ", ".join(map(str, t.val_slices))),
        ("seed", str(t.seed)),
    ]
    steps = [r.get("step") for r in model_file.history if r.get("step") is not None]
    if steps:
        rows.append(("trained", f"{max(steps)} optimizer steps, {len(model_file.history)} "
                     "validations"))
    return "\n".join(["| setting | value |", "| --- | --- |",
                      *(f"| {k} | {v} |" for k, v in rows)])


def documentation(model_file: ModelFile, validation: Validation, *, name: str, halo: int,
                  sizes: tuple[int, int], user_text: str | None = None) -> str:
    """Return the package's README.md: the user's text (if any), then the model card.

    Parameters
    ----------
    model_file : ModelFile
    validation : Validation
    name : str
        The package's name.
    halo : int
        The output's halo per side.
    sizes : (int, int)
        The smallest input side and the step between input sides.
    user_text : str, optional
        Markdown given with the export; the model card follows it.
    """
    m, n = model_file.config.model, model_file.normalization
    first, step = sizes
    parameters = sum(p.numel() for p in model_file.build_model().parameters())
    close = ("" if model_file.close_gaps is None else
             f", with gaps closed at P <= {model_file.close_gaps:g} (napari-unet only)")
    padding = ("unpadded (valid) convolutions as in the paper: the network sees "
               f"{2 * halo} more input pixels than it labels, so its logits are zero-padded back "
               "to the input size and that band is the output's halo"
               if m.padding == "valid" else
               "zero-padded (same) convolutions: the output has the input's size, its outer "
               f"{halo} pixels (the halo) have too little context and are cropped when tiling")
    card = f"""# {name}

A U-Net (Ronneberger et al. 2015) that finds cell membranes in 2D electron-microscopy slices,
trained and exported with napari-unet {__version__}.

## Input and output

- **input** `raw`: one grey 2D slice, axes (batch, channel, y, x), one channel, raw intensities
  (any range; the package converts them to float32). Sides y and x take {first} + {step} k pixels.
- **preprocessing**: the normalisation measured on the training image, exactly:
  unit = clip((x - {n.low!r}) / ({n.high!r} - {n.low!r}), 0, 1), then
  (unit - {n.mean!r}) / {n.std!r}; written as scale_linear, clip, scale_linear.
- **output** `probabilities`: axes (batch, channel, y, x), the input's size, two channels after
  a softmax: `interior` and `membrane`. Channel 1 (`membrane`) is P(membrane) in [0, 1].
  Crop {halo} pixels (the halo) from each side of each tile: {padding}.
- **mask**: membrane where P(membrane) > {model_file.threshold:.2f} (the threshold chosen at
  validation){close}.

## Network

Depth {m.depth}, {m.base_channels} channels in the first level, {m.padding} padding,
batch norm {'on' if m.batch_norm else 'off'}, dropout {m.dropout:g}; {parameters:,} parameters.

## Training

{_training_table(model_file)}

{validation_section(validation)}
## Citations

- {RONNEBERGER[0]} doi:{RONNEBERGER[1]}
- {ARGANDA[0]} doi:{ARGANDA[1]}
"""
    return card if not user_text else f"{user_text.rstrip()}\n\n{card}"
