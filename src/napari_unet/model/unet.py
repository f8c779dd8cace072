"""The U-Net of Ronneberger, Fischer and Brox (2015).

O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241, arXiv:1505.04597.

With its defaults, :class:`UNet` is the network of the paper's Fig. 1: a
contracting path of two unpadded 3x3 convolutions + ReLU per level and 2x2 max
pooling (channels 64, 128, 256, 512, 1024), an expansive path of 2x2
up-convolutions that halve the channels, concatenation with the centre-cropped
feature map of the same level, two 3x3 convolutions + ReLU, and a 1x1 head:
23 convolutions, a 572x572 input gives a 388x388 output.

With unpadded ("valid") convolutions only some input sizes work;
`napari_unet.model.sizes` gives those sizes and the output size for each, and
the network checks its input with it. The layers and the forward pass are
`napari_unet.model.network` (torch only, shipped in bioimage.io packages).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_unet.errors import InputError
from napari_unet.model.network import DoubleConv, PlainUNet, Up, center_crop
from napari_unet.model.sizes import (
    check_architecture,
    check_size,
    input_size_for,
    output_size,
    progression,
    valid_input_sizes,
)

__all__ = ["DoubleConv", "UNet", "Up", "center_crop", "init_he"]


def init_he(module: nn.Module) -> None:
    """He-initialise every convolution of a module in place, biases zero.

    He et al. 2015, as prescribed in section 3 of the U-Net paper: weights from a
    Gaussian with standard deviation sqrt(2 / N), N the number of incoming nodes
    of one neuron. For a convolution N = in_channels * kh * kw. For the 2x2,
    stride-2 up-convolution each output pixel sees one input position, so N =
    in_channels * kh * kw / (sh * sw) = in_channels; ``nn.init.kaiming_normal_``
    would use out_channels * kh * kw there, hence the explicit computation.

    Parameters
    ----------
    module : nn.Module
        Every Conv2d and ConvTranspose2d inside it is reinitialised.
    """
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            kh, kw = m.kernel_size
            sh, sw = m.stride
            fan_in = m.in_channels // m.groups * kh * kw / (sh * sw)
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            fan_in = m.in_channels // m.groups * kh * kw
        else:
            continue
        with torch.no_grad():
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                m.bias.zero_()


# -- the network -------------------------------------------------------------------


class UNet(PlainUNet):
    """U-Net of Ronneberger et al. (2015) for 2D segmentation.

    With the defaults this is the network of the paper's Fig. 1 (31,030,658
    parameters): a 572x572 input gives a 388x388 output, 23 convolutions.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for EM).
    out_channels : int
        Number of classes (logits per pixel); 2 in the paper.
    depth : int
        Number of resolution levels; channels are ``base_channels * 2**level``
        for level 0 .. depth - 1 (64 .. 1024 in the paper).
    base_channels : int
        Channels of the first level.
    padding : {'valid', 'same'}
        'valid': unpadded convolutions as in the paper, the output is smaller
        than the input (see :func:`output_size`); 'same': zero padding, the
        output has the input's size, which must be a multiple of
        ``2**(depth - 1)``.
    batch_norm : bool
        BatchNorm2d after each 3x3 convolution (not in the paper).
    dropout : float
        Probability of the paper's "drop-out layers at the end of the contracting
        path"; 0 (the default) adds none. The paper does not say where they sit;
        here a Dropout2d follows the last level that has a skip connection (so
        it acts on that skip and on the input of the bottleneck's pooling) and
        another follows the bottleneck, before the first up-convolution.

    Notes
    -----
    The forward pass keeps no state between calls and checks its input: a
    (N, in_channels, H, W) tensor with H and W valid sizes (see
    :func:`valid_input_sizes`); anything else raises a ValueError naming the sizes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int = 5,
        base_channels: int = 64,
        padding: str = "valid",
        *,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        check_architecture(depth, padding)
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout!r}")
        super().__init__(in_channels, out_channels, depth, base_channels, padding,
                         batch_norm=batch_norm, dropout=dropout)
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits.

        Parameters
        ----------
        x : (N, in_channels, H, W) Tensor
            H and W must be valid sizes (see :meth:`valid_input_sizes`).

        Returns
        -------
        (N, out_channels, output_size(H), output_size(W)) Tensor
            Logits (no softmax).
        """
        self._check_input(x)
        return super().forward(x)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise InputError(
                f"UNet expects an (N, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}"
            )
        for axis, side in zip(("height", "width"), x.shape[-2:], strict=True):
            check_size(int(side), self.depth, self.padding, what=f"input {axis}")

    @property
    def config(self) -> dict:
        """The constructor arguments: ``UNet(**net.config)`` builds the same network."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "depth": self.depth,
            "base_channels": self.base_channels,
            "padding": self.padding,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
        }

    @property
    def margin(self) -> int:
        """Pixels lost per axis, input side - output side (184 in the paper, 0 for 'same')."""
        return progression(self.depth, self.padding)[2]

    def output_size(self, input_size: int) -> int:
        """Return the output side for an input side; see :func:`output_size`."""
        return output_size(input_size, depth=self.depth, padding=self.padding)

    def input_size_for(self, output_size: int) -> int:
        """Return the smallest valid input covering an output side; see :func:`input_size_for`."""
        return input_size_for(output_size, depth=self.depth, padding=self.padding)

    def valid_input_sizes(self, *, max_size: int = 1024) -> list[int]:
        """List the valid input sides up to ``max_size``; see :func:`valid_input_sizes`."""
        return valid_input_sizes(self.depth, padding=self.padding, max_size=max_size)
