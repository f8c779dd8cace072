"""The size arithmetic of a U-Net with valid or same padding.

With unpadded ("valid") convolutions, as in Ronneberger, Fischer and Brox
(2015), only some input sizes work: every map entering a 2x2 pooling must have
an even side and every map must keep a positive side; each convolution loses
a margin, so the output is smaller than the input (572 gives 388 for the
paper's network). With zero-padded ("same") convolutions the output has the
input's size, which must be a multiple of ``2**(depth - 1)``.

The functions here give the valid sizes and the output size for each, from the
depth and the padding alone; the network itself (`napari_unet.model.unet`)
checks its input with them, and training tiles and overlap-tile prediction
are built from them. The module needs no torch.
"""

from __future__ import annotations

import math
import operator
from functools import lru_cache

from napari_unet.errors import InputError

__all__ = ["PADDINGS", "input_size_for", "output_size", "valid_input_sizes"]

PADDINGS = ("valid", "same")


def check_architecture(depth: int, padding: str) -> None:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise InputError(f"depth must be an integer >= 1, got {depth!r}")
    if padding not in PADDINGS:
        raise InputError(f"padding must be 'valid' or 'same', got {padding!r}")


@lru_cache(maxsize=4096)
def _trace(size: int, depth: int, padding: str) -> int | None:
    """Follow one side through the network; None when a step is not integral or positive."""
    shrink = 4 if padding == "valid" else 0  # two 3x3 convolutions lose 2 pixels each
    for _ in range(depth - 1):
        size -= shrink
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= shrink  # bottleneck
    if size < 1:
        return None
    for _ in range(depth - 1):
        size = 2 * size - shrink
        if size < 1:
            return None
    return size


@lru_cache(maxsize=256)
def progression(depth: int, padding: str) -> tuple[int, int, int]:
    """Return (smallest valid input, step between valid inputs, input - output).

    The valid sizes are ``first + k * step`` for k >= 0, ``step = 2**(depth - 1)``,
    and each loses the same margin (184 pixels for the paper's network).
    """
    step = 2 ** (depth - 1)
    first = step
    while _trace(first, depth, padding) is None:
        first += 1
    return first, step, first - _trace(first, depth, padding)


def check_size(size: int, depth: int, padding: str, what: str = "input size") -> int:
    """Return the output side for an input side, or raise naming the nearest valid ones."""
    size = operator.index(size)
    out = _trace(size, depth, padding) if size > 0 else None
    if out is not None:
        return out
    first, step, _ = progression(depth, padding)
    rule = (
        "every 2x2 pooling needs an even side and every side must stay positive"
        if padding == "valid"
        else f"it must be a positive multiple of 2**(depth - 1) = {step}"
    )
    if size < first:
        nearest = f"the smallest valid size is {first}"
    else:
        below = first + (size - first) // step * step
        nearest = f"the nearest valid sizes are {below} and {below + step}"
    raise InputError(
        f"{what} {size} does not fit a depth-{depth} U-Net with padding={padding!r} "
        f"({rule}); {nearest}"
    )


def output_size(input_size: int, *, depth: int = 5, padding: str = "valid") -> int:
    """Return the output side length of a U-Net for an input side length.

    Parameters
    ----------
    input_size : int
        Side length (height or width) of the input in pixels.
    depth : int
        Number of resolution levels (5 in the paper).
    padding : {'valid', 'same'}
        'valid': unpadded convolutions as in the paper, the output is smaller
        than the input; 'same': zero-padded convolutions, the output has the
        input's size.

    Returns
    -------
    int
        Side length of the output, e.g. 388 for 572 with the paper's network.

    Raises
    ------
    ValueError
        (:class:`~napari_unet.errors.InputError`) when the size does not fit
        the network; the message names the nearest valid sizes.
    """
    check_architecture(depth, padding)
    return check_size(input_size, depth, padding)


def valid_input_sizes(
    depth: int = 5, *, padding: str = "valid", max_size: int = 1024
) -> list[int]:
    """List the input side lengths a U-Net accepts, up to a maximum.

    For 'valid' padding these are the sizes at which every map entering a 2x2
    max pooling has an even side and every map keeps a positive side: 188, 204,
    220, ... (188 + 16 k) for depth 5. For 'same' padding they are the positive
    multiples of ``2**(depth - 1)``.

    Parameters
    ----------
    depth : int
        Number of resolution levels.
    padding : {'valid', 'same'}
        Convolution padding of the network.
    max_size : int
        Largest side length to list.

    Returns
    -------
    list of int
        The valid sizes in increasing order (empty when ``max_size`` is below
        the smallest one).
    """
    check_architecture(depth, padding)
    first, step, _ = progression(depth, padding)
    return list(range(first, operator.index(max_size) + 1, step))


def input_size_for(output_size: int, *, depth: int = 5, padding: str = "valid") -> int:
    """Return the smallest valid input side whose output side covers a requested one.

    Parameters
    ----------
    output_size : int
        Required output side length, >= 1.
    depth : int
        Number of resolution levels.
    padding : {'valid', 'same'}
        Convolution padding of the network.

    Returns
    -------
    int
        The smallest valid input side ``n`` with ``output_size(n) >= output_size``;
        572 for 388 with the paper's network.
    """
    check_architecture(depth, padding)
    wanted = operator.index(output_size)
    if wanted < 1:
        raise InputError(f"output size must be >= 1, got {wanted}")
    first, step, margin = progression(depth, padding)
    return first + max(0, math.ceil((wanted + margin - first) / step)) * step
