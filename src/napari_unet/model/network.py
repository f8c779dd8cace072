"""The layers and forward pass of the U-Net of Ronneberger, Fischer and Brox (2015).

O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
Image Segmentation", MICCAI 2015, LNCS 9351, pp. 234-241, doi:10.1007/978-3-319-24574-4_28.

This module imports torch and the standard library only, and its forward pass
compiles with TorchScript: bioimage.io model packages written by napari-unet
carry this very file as the architecture of their ``pytorch_state_dict``
weights (`PlainUNet` and its keyword arguments), so any tool rebuilds the
network from the package alone. `napari_unet.model.unet.UNet` is the same
network with its arguments and input sizes checked and He initialisation.
"""

import torch
import torch.nn.functional as F
from torch import nn


def center_crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Crop the centre of a feature map (the paper's "copy and crop" arrow).

    Parameters
    ----------
    x : (N, C, H, W) Tensor
        Feature map of the contracting path.
    size : list of int
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


class PlainUNet(nn.Module):
    """The U-Net's layers and forward pass, without argument checks or initialisation.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels and classes (logits per pixel).
    depth : int
        Resolution levels; level ``i`` has ``base_channels * 2**i`` channels.
    base_channels : int
        Channels of the first level.
    padding : {'valid', 'same'}
        Unpadded convolutions (the paper: the output is smaller than the input)
        or zero-padded ones (the output has the input's size).
    batch_norm : bool
        BatchNorm2d after each 3x3 convolution.
    dropout : float
        Dropout2d after the last level with a skip connection and after the
        bottleneck (0: none).
    keep_size : bool
        Zero-pad the logits of a valid-padding network back to the input's
        size, centred; the band it adds (half the network's margin per side)
        is what a bioimage.io package declares as the output's halo, so that
        tools which tile by halos crop it again. False: the network's own output.
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
        keep_size: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.base_channels = base_channels
        self.padding = padding
        self.batch_norm = batch_norm
        self.dropout = float(dropout)
        self.keep_size = keep_size

        widths = [base_channels * 2**level for level in range(depth)]
        contract, c_in = [], in_channels
        for level, width in enumerate(widths[:-1]):
            last = level == depth - 2
            contract.append(DoubleConv(c_in, width, padding=padding, batch_norm=batch_norm,
                                       dropout=self.dropout if last else 0.0))
            c_in = width
        self.contract = nn.ModuleList(contract)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = DoubleConv(c_in, widths[-1], padding=padding, batch_norm=batch_norm,
                                     dropout=self.dropout)
        self.expand = nn.ModuleList(Up(c, padding=padding, batch_norm=batch_norm)
                                    for c in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel class logits.

        Parameters
        ----------
        x : (N, in_channels, H, W) Tensor

        Returns
        -------
        (N, out_channels, h, w) Tensor
            Logits (no softmax); ``h, w`` the output size of a valid-padding
            network, or ``H, W`` for same padding or with ``keep_size``.
        """
        height, width = x.shape[-2], x.shape[-1]
        skips: list[torch.Tensor] = []
        for level in self.contract:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i, up in enumerate(self.expand):
            x = up(x, skips[len(skips) - 1 - i])
        x = self.head(x)
        if self.keep_size:
            dy, dx = height - x.shape[-2], width - x.shape[-1]
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return x
