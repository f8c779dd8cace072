import numpy as np
import pytest
import tifffile
import torch

from napari_unet.checkpoint import ModelFile, make_model, save_model
from napari_unet.cli import main
from napari_unet.data import Normalization
from napari_unet.io import read_labels


@pytest.fixture
def model_path(tmp_path, tiny_config):
    torch.manual_seed(0)
    model_file = ModelFile(tiny_config, Normalization(0.0, 255.0, 0.5, 0.2),
                           make_model(tiny_config).state_dict())
    return save_model(tmp_path / "m.pt", model_file)


@pytest.fixture
def stack(tmp_path, isbi_small):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, isbi_small[0][:2, :50, :70], photometric="minisblack")
    return path


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_writes_mask_probabilities_and_cells(model_path, stack, tmp_path, capsys):
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "mask.tif",
                        "--probabilities", tmp_path / "p.tif", "--cells", tmp_path / "c.tif",
                        "--device", "cpu"], capsys)
    assert code == 0, err
    mask, probs, cells = (tifffile.imread(tmp_path / n) for n in ("mask.tif", "p.tif", "c.tif"))
    assert mask.shape == probs.shape == cells.shape == (2, 50, 70)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
    np.testing.assert_array_equal(mask == 255, probs > 0.5)
    with tifffile.TiffFile(tmp_path / "mask.tif") as tif:
        assert tif.series[0].axes == "ZYX"
    np.testing.assert_array_equal(read_labels(tmp_path / "mask.tif"), np.where(probs > 0.5, 1, 2))


def test_isbi_convention(model_path, stack, tmp_path, capsys):
    assert run(["predict", model_path, stack, "-o", tmp_path / "a.tif", "--device", "cpu"],
               capsys)[0] == 0
    assert run(["predict", model_path, stack, "-o", tmp_path / "b.tif", "--isbi", "--device",
                "cpu"], capsys)[0] == 0
    a, b = tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    np.testing.assert_array_equal(a, 255 - b)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("exists", "exists; use --overwrite"),
        ("folder", "no such folder"),
        ("model", "not a napari-unet model file"),
        ("rgb", "looks like RGB"),
        ("suffix", "write .tif or .tiff files"),
    ],
)
def test_mistakes_exit_2_and_write_nothing(model_path, stack, tmp_path, capsys, case, message):
    model, image, output = model_path, stack, tmp_path / "mask.tif"
    extra = ["--probabilities", tmp_path / "p.tif"]
    if case == "exists":
        output.write_bytes(b"precious")
    elif case == "folder":
        output = tmp_path / "missing" / "mask.tif"
    elif case == "model":
        model = tmp_path / "fake.pt"
        model.write_bytes(b"not a model")
    elif case == "rgb":
        image = tmp_path / "rgb.tif"
        tifffile.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    elif case == "suffix":
        output = tmp_path / "mask.png"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(["predict", model, image, "-o", output, *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "exists":
        assert output.read_bytes() == b"precious"
