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
        ("suffix", "write .tif, .tiff or .zarr"),
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


def test_large_volume_to_zarr_equals_tiff(model_path, stack, tmp_path, capsys):
    import zarr

    assert run(["predict", model_path, stack, "-o", tmp_path / "m.tif", "--probabilities",
                tmp_path / "p.tif", "--device", "cpu"], capsys)[0] == 0
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "m.zarr",
                        "--probabilities", tmp_path / "p.zarr", "--block", "1,32,32",
                        "--device", "cpu"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(zarr.open_array(tmp_path / "p.zarr")[:],
                               tifffile.imread(tmp_path / "p.tif"), atol=1e-5)
    mask = zarr.open_array(tmp_path / "m.zarr")
    assert mask.dtype == np.uint8 and mask.chunks == (1, 32, 32)
    np.testing.assert_array_equal(mask[:], tifffile.imread(tmp_path / "m.tif"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_blocks_run_on_a_dask_cluster(model_path, stack, tmp_path, capsys):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "m.zarr",
                            "--scheduler", cluster.scheduler_address, "--block", "1,32,32",
                            "--device", "cpu"], capsys)
        assert code == 0, err
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert "predict_block" in prefixes, prefixes
    assert (tmp_path / "m.zarr").is_dir()


def test_mixed_outputs_refused(model_path, stack, tmp_path, capsys):
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "m.zarr",
                        "--probabilities", tmp_path / "p.tif"], capsys)
    assert code == 2 and "either all outputs as .zarr" in err
