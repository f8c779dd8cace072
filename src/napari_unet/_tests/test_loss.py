import numpy as np
import pytest
import torch

from napari_unet.training.loss import probability_loss, weighted_cross_entropy
from napari_unet.training.samples import class_targets
from napari_unet.training.weights import annotation_weight_map


def two_cells():
    labels = np.full((16, 16), 2, np.uint8)
    labels[:, 7] = 1  # a one-pixel membrane between two cells
    labels[0, :] = 0  # a row left unannotated
    return labels


def gradient(labels, weights, logits):
    logits = logits.clone().requires_grad_(True)
    target = torch.from_numpy(class_targets(labels))[None]
    loss = weighted_cross_entropy(logits, target, torch.from_numpy(weights)[None])
    loss.backward()
    return loss.detach(), logits.grad


def test_matches_eq1_by_hand():
    labels = np.array([[1, 2, 0]], np.uint8)
    weights = np.array([[2.0, 1.0, 0.0]], np.float32)
    logits = torch.tensor([[[[0.0, 1.0, 5.0]], [[1.0, 0.0, -5.0]]]])  # (1, 2, 1, 3)
    p_membrane = torch.softmax(logits, dim=1)[0, 1, 0]
    expected = (2.0 * -torch.log(p_membrane[0]) + 1.0 * -torch.log(1 - p_membrane[1])) / 2
    loss, _ = gradient(labels, weights, logits)
    assert torch.allclose(loss, expected)


def test_w0_changes_the_gradients():
    labels = two_cells()
    logits = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    _, plain = gradient(labels, annotation_weight_map(labels, w0=0.0), logits)
    _, bordered = gradient(labels, annotation_weight_map(labels, w0=10.0), logits)
    membrane = torch.from_numpy(labels == 1)
    # On the one-pixel membrane d1 = d2 = 1: its weight grows from w_c to
    # w_c + 10 exp(-4 / 50), and its gradient by the same factor; w_c = 240 / (2 * 15).
    ratio = bordered[0, :, membrane].abs().sum() / plain[0, :, membrane].abs().sum()
    w_c = 240 / (2 * 15)
    assert ratio.item() == pytest.approx((w_c + 10 * np.exp(-4 / 50)) / w_c, rel=1e-5)
    # Interior pixels far from the membrane keep their gradient.
    assert torch.allclose(bordered[0, :, 8:, 0], plain[0, :, 8:, 0])


def test_unannotated_pixels_are_ignored():
    labels = two_cells()
    weights = annotation_weight_map(labels)
    logits = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    loss, grad = gradient(labels, weights, logits)
    assert torch.count_nonzero(grad[0, :, 0, :]) == 0
    changed = logits.clone()
    changed[0, :, 0, :] = 100.0
    loss_changed, _ = gradient(labels, weights, changed)
    assert torch.allclose(loss, loss_changed)


def test_nothing_annotated_gives_zero():
    labels = np.zeros((4, 4), np.uint8)
    loss, grad = gradient(labels, np.zeros((4, 4), np.float32), torch.randn(1, 2, 4, 4))
    assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


def test_probability_loss_is_eq1_of_the_softmax():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 30.0]], [[1.0, -2.0], [0.5, -30.0]]]])
    target = torch.tensor([[[1, 0], [0, 1]]])
    weights = torch.tensor([[[2.0, 1.0], [0.0, 1.0]]])
    membrane = torch.softmax(logits, dim=1)[:, 1].numpy()
    expected = weighted_cross_entropy(logits, target, weights).item()
    # the last pixel's mistake is clipped at 1e-7 rather than costing 60
    clipped = (2 * -np.log(membrane[0, 0, 0]) + -np.log(1 - membrane[0, 0, 1]) - np.log(1e-7)) / 3
    assert probability_loss(membrane, target.numpy(), weights.numpy()) == \
        pytest.approx(clipped, rel=1e-5)
    assert expected > clipped + 10
