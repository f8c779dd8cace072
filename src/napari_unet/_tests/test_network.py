"""model/network.py: the file bioimage.io packages carry rebuilds the same network on its own."""

import ast
import importlib.util
import subprocess
import sys

import pytest
import torch

from napari_unet import UNet
from napari_unet.model import network
from napari_unet.model.network import PlainUNet

CONFIGS = [
    {"depth": 3, "base_channels": 4},
    {"depth": 1, "base_channels": 2},
    {"depth": 2, "base_channels": 3, "padding": "same", "batch_norm": True, "dropout": 0.2},
    {"in_channels": 2, "out_channels": 3, "depth": 3, "base_channels": 2},
]


def test_imports_torch_and_the_standard_library_only():
    tree = ast.parse(open(network.__file__, encoding="utf-8").read())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots - {"torch"} <= set(sys.stdlib_module_names), roots


def test_loads_as_a_lone_file_without_napari_unet(tmp_path):
    # as a consumer of a package does: the file alone, napari_unet not importable
    lone = tmp_path / "architecture.py"
    lone.write_text(open(network.__file__, encoding="utf-8").read(), encoding="utf-8")
    code = ("import sys; sys.modules['napari_unet'] = None\n"
            "import importlib.util as u\n"
            f"spec = u.spec_from_file_location('arch', {str(lone)!r})\n"
            "m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "import torch; print(tuple(m.PlainUNet(depth=2, base_channels=2)"
            "(torch.zeros(1, 1, 20, 20)).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 2, 4, 4)"


def _lone_module(path):
    spec = importlib.util.spec_from_file_location("lone_network", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_state_dict_rebuilds_the_same_outputs_eager_and_scripted(kwargs):
    torch.manual_seed(0)
    net = UNet(**kwargs).eval()
    plain = _lone_module(network.__file__).PlainUNet(**net.config).eval()
    plain.load_state_dict(net.state_dict(), strict=True)
    scripted = torch.jit.script(plain)
    first, step = net.valid_input_sizes()[:2]
    x = torch.randn(2, kwargs.get("in_channels", 1), first + step, first + 2 * step)
    with torch.no_grad():
        expected = net(x)
        assert torch.equal(plain(x), expected)
        assert torch.equal(scripted(x), expected)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_keep_size_pads_the_logits_back_to_the_input_size_centred(padding):
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=4, padding=padding).eval()
    padded = PlainUNet(**net.config, keep_size=True).eval()
    padded.load_state_dict(net.state_dict())
    x = torch.randn(1, 1, 60, 76)
    with torch.no_grad():
        inner, full = net(x), torch.jit.script(padded)(x)
    assert full.shape == (1, 2, 60, 76)
    m = net.margin // 2
    assert torch.equal(full[..., m:60 - m, m:76 - m], inner)
    if m:
        assert not full[..., :m, :].any() and not full[..., -m:, :].any()
