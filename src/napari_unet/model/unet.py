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
the network checks its input with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_unet.errors import InputError
from napari_unet.model.sizes import (
    check_architecture,
    check_size,
    input_size_for,
    output_size,
    progression,
    valid_input_sizes,
)

__all__ = ["DoubleConv", "UNet", "Up", "center_crop", "init_he"]


# -- building blocks ---------------------------------------------------------------


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop the centre of a feature map (the paper's "copy and crop" arrow).

    Parameters
    ----------
    x : (N, C, H, W) Tensor
        Feature map of the contracting path.
    size : tuple of int
        (height, width) to keep; the surplus on each axis must be even.

    Returns
    -------
    (N, C, size[0], size[1]) Tensor
        A view of ``x``.
    """
    top = (x.shape[-2] - size[0]) // 2
    left = (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (batch norm and) a ReLU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels before and after the block.
    padding : {'valid', 'same'}
        'valid' loses 2 pixels per side; 'same' zero-pads to keep the size.
    batch_norm : bool
        Insert a BatchNorm2d between each convolution and its ReLU (the
        convolutions then have no bias, which batch norm would cancel).
    dropout : float
        When > 0, a Dropout2d with this probability follows the block.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            layers.append(
                nn.Conv2d(
                    channels,
                    out_channels,
                    kernel_size=3,
                    padding=1 if padding == "same" else 0,
                    bias=not batch_norm,
                )
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class Up(nn.Module):
    """One step of the expansive path: up-convolve, crop and concatenate, DoubleConv.

    Parameters
    ----------
    in_channels : int
        Channels of the coarser map; the 2x2 up-convolution halves them, the
        skip connection brings the same number back, and the DoubleConv maps
        ``in_channels`` to ``in_channels // 2``.
    padding : {'valid', 'same'}
        Padding of the 3x3 convolutions.
    batch_norm : bool
        Batch norm in the DoubleConv.
    """

    def __init__(self, in_channels: int, *, padding: str = "valid", batch_norm: bool = False):
        super().__init__()
        out_channels = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, padding=padding, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` and merge it with the centre of ``skip``.

        Parameters
        ----------
        x : (N, C, h, w) Tensor
            Map from the level below.
        skip : (N, C // 2, H, W) Tensor
            Map of this level from the contracting path, ``H >= 2 h``.

        Returns
        -------
        (N, C // 2, H', W') Tensor
        """
        x = self.up(x)
        return self.conv(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))


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


class UNet(nn.Module):
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
        super().__init__()
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
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.base_channels = base_channels
        self.padding = padding
        self.batch_norm = batch_norm
        self.dropout = float(dropout)

        widths = [base_channels * 2**level for level in range(depth)]
        block = {"padding": padding, "batch_norm": batch_norm}
        contract, c_in = [], in_channels
        for level, width in enumerate(widths[:-1]):
            last = level == depth - 2
            contract.append(
                DoubleConv(c_in, width, dropout=self.dropout if last else 0.0, **block)
            )
            c_in = width
        self.contract = nn.ModuleList(contract)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(c_in, widths[-1], dropout=self.dropout, **block)
        self.expand = nn.ModuleList(Up(c, **block) for c in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
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
        skips = []
        for level in self.contract:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.expand, reversed(skips), strict=True):
            x = up(x, skip)
        return self.head(x)

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
