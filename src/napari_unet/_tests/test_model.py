import itertools
import math

import pytest
import torch
from torch import nn

from napari_unet import UNet
from napari_unet.model.sizes import input_size_for, output_size, valid_input_sizes

CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def n_convs(net):
    return sum(isinstance(m, CONVS) for m in net.modules())


def brute_force_output(size, depth, padding):
    """Follow one side through the network by hand; None where a step breaks."""
    shrink = 4 if padding == "valid" else 0
    sizes = [size]
    for _ in range(depth - 1):
        sizes.append(sizes[-1] - shrink)
        sizes.append(sizes[-1] / 2)
    sizes.append(sizes[-1] - shrink)
    for _ in range(depth - 1):
        sizes.append(2 * sizes[-1] - shrink)
    pre_pool = sizes[1 : 2 * (depth - 1) : 2]
    if any(s <= 0 or s != int(s) for s in sizes) or any(s % 2 for s in pre_pool):
        return None
    return int(sizes[-1])


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_output_shape(depth, padding):
    net = UNet(in_channels=1, out_channels=3, depth=depth, base_channels=2, padding=padding)
    h, w = valid_input_sizes(depth, padding=padding, max_size=400)[1:3]
    out = net(torch.randn(2, 1, h, w))
    expected = (
        (h, w) if padding == "same" else (output_size(h, depth=depth), output_size(w, depth=depth))
    )
    assert out.shape == (2, 3, *expected)
    assert expected == (net.output_size(h), net.output_size(w))


def test_paper_sizes_and_23_convolutions():
    net = UNet(base_channels=2)
    assert n_convs(net) == 23
    assert net(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    assert net.output_size(572) == 388
    assert net.margin == 184
    assert net.input_size_for(388) == 572
    assert n_convs(UNet(depth=3, base_channels=2)) == 13  # 2 per level, 3 per up-step, head


def test_default_parameter_count_matches_paper():
    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + c_out

    widths = [64, 128, 256, 512, 1024]
    expected = conv(1, 64, 3) + conv(64, 64, 3)
    for c_in, c_out in itertools.pairwise(widths):  # contracting path and bottleneck
        expected += conv(c_in, c_out, 3) + conv(c_out, c_out, 3)
    for c_in, c_out in itertools.pairwise(widths[::-1]):  # expansive path
        expected += conv(c_in, c_out, 2) + conv(2 * c_out, c_out, 3) + conv(c_out, c_out, 3)
    expected += conv(64, 2, 1)
    assert expected == 31_030_658
    net = UNet()
    assert sum(p.numel() for p in net.parameters()) == expected
    assert n_convs(net) == 23


@pytest.mark.parametrize("kwargs", [{}, {"batch_norm": True, "padding": "same"}])
def test_gradients_reach_every_parameter(kwargs):
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=4, **kwargs)
    size = valid_input_sizes(3, padding=net.padding, max_size=64)[-1]
    out = net(torch.randn(2, 1, size, size))
    target = torch.randint(0, 2, (2, *out.shape[-2:]))
    nn.functional.cross_entropy(out, target).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_he_initialisation_of_every_convolution():
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=32, batch_norm=False)
    checked = 0
    for name, m in net.named_modules():
        if not isinstance(m, CONVS):
            continue
        w = m.weight
        if isinstance(m, nn.ConvTranspose2d):
            # weight (in, out, 2, 2), stride 2: each output pixel sees in_channels inputs
            fan_in = w.shape[0]
        else:
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        expected = math.sqrt(2.0 / fan_in)
        tolerance = 5 / math.sqrt(2 * w.numel())  # 5 standard errors of a sample std
        assert abs(w.std().item() / expected - 1) < tolerance, name
        assert abs(w.mean().item()) < 5 * expected / math.sqrt(w.numel()), name
        assert torch.count_nonzero(m.bias) == 0, name
        checked += 1
    assert checked == n_convs(net) == 13


@pytest.mark.parametrize(
    ("size", "nearest"), [(570, "556 and 572"), (573, "572 and 588"), (100, "188")]
)
def test_wrong_size_names_nearest_valid_sizes(size, nearest):
    with pytest.raises(ValueError, match=rf"\b{size}\b.*{nearest}"):
        output_size(size)
    net = UNet(base_channels=2)
    with pytest.raises(ValueError, match=rf"width {size}\b.*{nearest}"):
        net(torch.zeros(1, 1, 572, size))


def test_wrong_tensor_shape_names_the_shape():
    net = UNet(in_channels=1, depth=2, base_channels=2)
    with pytest.raises(ValueError, match=r"\(1, 3, 20, 20\)"):
        net(torch.zeros(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"\(20, 20\)"):
        net(torch.zeros(20, 20))


def test_valid_input_sizes_depth_5():
    sizes = valid_input_sizes(5, max_size=600)
    assert sizes[:3] == [188, 204, 220]
    assert 572 in sizes
    assert sizes == [s for s in range(1, 601) if brute_force_output(s, 5, "valid")]


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_size_helpers_agree_with_brute_force(depth, padding):
    sizes = valid_input_sizes(depth, padding=padding, max_size=300)
    assert sizes == [s for s in range(1, 301) if brute_force_output(s, depth, padding)]
    for s in sizes:
        assert output_size(s, depth=depth, padding=padding) == brute_force_output(
            s, depth, padding
        )
    for wanted in (1, 7, 50, 100):
        n = input_size_for(wanted, depth=depth, padding=padding)
        assert output_size(n, depth=depth, padding=padding) >= wanted
        smaller = [s for s in valid_input_sizes(depth, padding=padding, max_size=n - 1)]
        assert all(output_size(s, depth=depth, padding=padding) < wanted for s in smaller)


@pytest.mark.parametrize(("size", "depth"), [(33, 2), (36, 4), (7, 4)])
def test_same_padding_rejects_indivisible_sizes(size, depth):
    net = UNet(depth=depth, base_channels=2, padding="same")
    with pytest.raises(ValueError, match=rf"height {size}\b"):
        net(torch.zeros(1, 1, size, 2 ** (depth - 1) * 4))


def test_forward_is_deterministic_and_stateless():
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=4, batch_norm=True, dropout=0.5).eval()
    x = torch.randn(1, 1, 60, 60)
    x_copy = x.clone()
    first = net(x)
    net(torch.randn(1, 1, 76, 76))  # a different size in between changes nothing
    assert torch.equal(net(x), first)
    assert torch.equal(x, x_copy)


def test_dropout_sits_at_end_of_contracting_path_and_only_acts_in_training():
    assert not any(isinstance(m, nn.Dropout2d) for m in UNet(base_channels=2).modules())
    net = UNet(depth=3, base_channels=4, dropout=0.5)
    drops = [name for name, m in net.named_modules() if isinstance(m, nn.Dropout2d)]
    assert drops == ["contract.1.4", "bottleneck.4"]
    x = torch.randn(1, 1, 60, 60)
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_config_round_trip_and_bad_arguments():
    net = UNet(2, 3, depth=3, base_channels=4, padding="same", batch_norm=True, dropout=0.1)
    assert UNet(**net.config).config == net.config
    for kwargs in ({"depth": 0}, {"padding": "full"}, {"base_channels": 0}, {"dropout": 1.0}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            UNet(**kwargs)
