"""The pixel-wise weighted cross-entropy of Ronneberger et al. 2015, eq. 1."""

import numpy as np
import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted softmax cross-entropy over the annotated pixels (eq. 1 of the paper).

    E = sum_x w(x) * -log p_l(x)(x) / #annotated, with p the softmax over
    classes, l(x) the true class and w the weight map (`napari_unet.weight_map`).
    The sum is divided by the number of annotated pixels (w > 0), not by the
    sum of the weights: dividing by the weights would cancel them, and the
    border term would no longer change anything.

    Parameters
    ----------
    logits : (N, C, H, W) Tensor
        Network output.
    target : (N, H, W) int64 Tensor
        Class index of every pixel (anything where not annotated).
    weights : (N, H, W) Tensor
        w(x); 0 where not annotated, so those pixels add nothing.

    Returns
    -------
    loss : () Tensor
        0 (with a gradient) when nothing is annotated.
    """
    total, annotated = loss_terms(logits, target, weights)
    return total / annotated.clamp(min=1)


def loss_terms(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the two terms of eq. 1 (`weighted_cross_entropy`): its sum and its pixel count.

    A batch split over several processes (data-parallel training) adds up
    each share's terms before dividing, so that the loss of the whole batch is
    the one a single process computes (`napari_unet.training.distributed`).

    Parameters
    ----------
    logits : (N, C, H, W) Tensor
    target : (N, H, W) int64 Tensor
    weights : (N, H, W) Tensor

    Returns
    -------
    total : () float32 Tensor
        sum_x w(x) * -log p_l(x)(x), with a gradient.
    annotated : () int64 Tensor
        The number of annotated pixels (w > 0).
    """
    if logits.shape[-2:] != target.shape[-2:] or target.shape != weights.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, target {tuple(target.shape)} and weights "
            f"{tuple(weights.shape)} must cover the same pixels"
        )
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (weights * ce).sum(), (weights > 0).sum()


def probability_loss(probabilities: np.ndarray, target: np.ndarray, weights: np.ndarray) -> float:
    """Eq. 1 for a prediction already turned into P(membrane) (a validation's).

    The log of the two class probabilities serves as logits: their softmax
    gives the probabilities back, so `weighted_cross_entropy` applies
    unchanged. Probabilities are clipped at 1e-7, so a confident mistake
    costs at most -log(1e-7) ~ 16 per unit weight.

    Parameters
    ----------
    probabilities : (N, H, W) float ndarray
        P(membrane) in [0, 1].
    target : (N, H, W) int ndarray
        1 = membrane, 0 = anything else (`napari_unet.training.samples.class_targets`).
    weights : (N, H, W) float ndarray
        w(x); 0 where not annotated.

    Returns
    -------
    loss : float
    """
    membrane = torch.from_numpy(np.asarray(probabilities, dtype=np.float32))
    log_p = torch.log(torch.stack([1.0 - membrane, membrane], dim=1).clamp(min=1e-7))
    return weighted_cross_entropy(log_p, torch.from_numpy(np.asarray(target, dtype=np.int64)),
                                  torch.from_numpy(np.asarray(weights, dtype=np.float32))).item()
