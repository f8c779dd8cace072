import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli.main import main
from napari_unet.io.stacks import KIND_KEY, cell_label_array, read_labels, tiff_metadata
from napari_unet.model.files import ModelFile, load_model, make_model, save_model
from napari_unet.model.normalization import Normalization
from napari_unet.prediction.postprocess import is_membrane


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
    code, out, err = run(["predict", model_path, stack, "-o", tmp_path / "mask.tif",
                          "--probabilities", tmp_path / "p.tif", "--cells", tmp_path / "c.tif",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    steps = [line.split(" ...")[0] for line in out.splitlines()]
    assert steps == ["computing the mask (threshold 0.5)",
                     "labelling cells (watershed of the probabilities)",
                     f"writing the mask to {tmp_path / 'mask.tif'}",
                     f"writing the probabilities to {tmp_path / 'p.tif'}",
                     f"writing the cells to {tmp_path / 'c.tif'}",
                     f"wrote {tmp_path / 'mask.tif'}, {tmp_path / 'p.tif'}, {tmp_path / 'c.tif'}"]
    mask, probs, cells = (tifffile.imread(tmp_path / n) for n in ("mask.tif", "p.tif", "c.tif"))
    assert mask.shape == probs.shape == cells.shape == (2, 50, 70)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
    # cells in the smallest dtype that holds them, as the Export widget writes them
    assert cells.dtype == cell_label_array(cells.astype(np.int64)).dtype
    assert cells.dtype == (np.uint8 if cells.max() < 256 else np.uint16)
    assert tiff_metadata(tmp_path / "c.tif")[KIND_KEY] == "cells"
    np.testing.assert_array_equal(mask == 255, probs > 0.5)
    with tifffile.TiffFile(tmp_path / "mask.tif") as tif:
        assert tif.series[0].axes == "ZYX"
    np.testing.assert_array_equal(read_labels(tmp_path / "mask.tif"), np.where(probs > 0.5, 1, 2))


def test_gaps_closed_as_the_model_says_unless_the_flag_says_otherwise(
        model_path, stack, tmp_path, capsys):
    model_file = load_model(model_path)
    closing = tmp_path / "closing.pt"
    save_model(closing, dataclasses.replace(
        model_file, config=model_file.config.replace(train={"close_gaps": 0.3})))
    outputs = {}
    for name, flags in {"model": [], "off": ["--close-gaps", "off"],
                        "flag": ["--close-gaps", "0.1"]}.items():
        path = tmp_path / f"{name}.tif"
        code, out, err = run(["predict", closing, stack, "-o", path, "--probabilities",
                              tmp_path / f"{name}_p.tif", "--device", "cpu", *flags], capsys)
        assert code == 0, err
        outputs[name] = (read_labels(path) == 1, out)
    probs = tifffile.imread(tmp_path / "model_p.tif")
    np.testing.assert_array_equal(outputs["model"][0],
                                  is_membrane(probs, threshold=0.5, close_gaps=0.3))
    assert "(threshold 0.5, gaps closed at 0.3)" in outputs["model"][1]
    np.testing.assert_array_equal(outputs["off"][0], probs > 0.5)
    assert "mask (threshold 0.5) ..." in outputs["off"][1]
    np.testing.assert_array_equal(outputs["flag"][0],
                                  is_membrane(probs, threshold=0.5, close_gaps=0.1))
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(closing), str(stack), "-o", str(tmp_path / "x.tif"),
              "--close-gaps", "1.5"])
    assert exit_.value.code == 2
    assert "a number between 0 and 1 or 'off', not '1.5'" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


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
    # gaps are closed on whole slices, whatever the blocks
    for suffix in ("tif", "zarr"):
        assert run(["predict", model_path, stack, "-o", tmp_path / f"closed.{suffix}",
                    "--block", "1,32,32", "--close-gaps", "0.45", "--device", "cpu"],
                   capsys)[0] == 0
    closed = zarr.open_array(tmp_path / "closed.zarr")
    assert closed.chunks == (1, 32, 32) and closed.attrs["close_gaps"] == 0.45
    np.testing.assert_array_equal(closed[:], tifffile.imread(tmp_path / "closed.tif"))
    probs = tifffile.imread(tmp_path / "p.tif")
    np.testing.assert_array_equal(closed[:] == 255,
                                  is_membrane(probs, threshold=0.5, close_gaps=0.45))


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


@pytest.mark.parametrize("case", ["image", "link", "hardlink", "probabilities", "cells", "model",
                                  "twice", "zarr", "uncertainty", "ranking"])
def test_outputs_never_replace_an_input(model_path, stack, tmp_path, capsys, case):
    import zarr

    image, output, extra = stack, stack, []
    if case == "link":
        output = tmp_path / "link.tif"
        output.symlink_to(stack)
    elif case == "hardlink":
        output = tmp_path / "hard.tif"
        os.link(stack, output)
    elif case in ("probabilities", "cells", "uncertainty", "ranking"):
        output, extra = tmp_path / "mask.tif", [f"--{case}", stack]
    elif case == "model":
        output = model_path
    elif case == "twice":
        output, extra = tmp_path / "mask.tif", ["--probabilities", tmp_path / "mask.tif"]
    elif case == "zarr":
        image = output = tmp_path / "v.zarr"
        zarr.create_array(str(image), shape=(2, 50, 70), chunks=(1, 50, 70), dtype="uint8")
        zarr.open_array(str(image), mode="r+")[:] = tifffile.imread(stack)
    before = _contents(tmp_path)
    code, _, err = run(["predict", model_path, image, "-o", output, *extra, "--overwrite",
                        "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    message = "both name" if case == "twice" else "an input is never replaced"
    assert message in err
    assert _contents(tmp_path) == before


def _contents(folder):
    """Every file under a folder (links followed) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_writes_the_uncertainty_and_the_ranking(model_path, stack, tmp_path, capsys):
    import csv

    from napari_unet.prediction.uncertainty import rank, uncertainty_map

    code, out, err = run(["predict", model_path, stack, "-o", tmp_path / "m.tif",
                          "--probabilities", tmp_path / "p.tif", "--uncertainty",
                          tmp_path / "u.tif", "--ranking", tmp_path / "r.csv", "--device", "cpu"],
                         capsys)
    assert code == 0, err
    assert "ranking the slices by uncertainty ..." in out
    probs, unsure = tifffile.imread(tmp_path / "p.tif"), tifffile.imread(tmp_path / "u.tif")
    expected = uncertainty_map(probs, threshold=0.5)
    np.testing.assert_allclose(unsure, expected, atol=1e-6)
    assert unsure.dtype == np.float32 and tiff_metadata(tmp_path / "u.tif")[KIND_KEY] == \
        "uncertainty"
    with open(tmp_path / "r.csv") as file:
        rows = list(csv.DictReader(file))
    ranking = rank(expected)
    assert [int(r["slice"]) for r in rows] == ranking.order()
    assert [(int(r["hotspot_y"]), int(r["hotspot_x"])) for r in rows] == \
        [ranking.hotspot(z) for z in ranking.order()]
    # a large volume: the same map as zarr, the same ranking
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "m.zarr",
                        "--uncertainty", tmp_path / "u.zarr", "--ranking", tmp_path / "rz.csv",
                        "--block", "1,32,32", "--device", "cpu"], capsys)
    assert code == 0, err
    import zarr

    lazy = zarr.open_array(tmp_path / "u.zarr")
    assert lazy.chunks == (1, 32, 32)
    np.testing.assert_allclose(lazy[:], unsure, atol=1e-5)
    assert (tmp_path / "rz.csv").read_text().splitlines()[0] == \
        (tmp_path / "r.csv").read_text().splitlines()[0]
    assert [line.split(",")[1] for line in (tmp_path / "rz.csv").read_text().splitlines()] == \
        [line.split(",")[1] for line in (tmp_path / "r.csv").read_text().splitlines()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("flag", "name", "message"), [
    ("--ranking", "r.txt", "--ranking writes a .csv table"),
    ("--uncertainty", "u.png", "write .tif, .tiff or .zarr"),
    ("--ranking", "exists.csv", "exists; use --overwrite"),
])
def test_uncertainty_mistakes_write_nothing(model_path, stack, tmp_path, capsys, flag, name,
                                            message):
    (tmp_path / "exists.csv").write_text("precious")
    before = _contents(tmp_path)
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "m.tif", flag,
                        tmp_path / name, "--device", "cpu"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert _contents(tmp_path) == before


def test_tile_is_rounded_with_a_notice(model_path, stack, tmp_path, capsys):
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "a.tif", "--tile", "7",
                        "--device", "cpu"], capsys)
    # the tiny model: depth 3, valid padding: tiles on a grid of 4
    assert code == 0 and "note: tile 7 rounded to 8, a tile side that a depth-3 U-Net with " \
        "valid padding can use" in err
    code, _, err = run(["predict", model_path, stack, "-o", tmp_path / "b.tif", "--tile", "8",
                        "--device", "cpu"], capsys)
    assert code == 0 and "note:" not in err
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"),
                                  tifffile.imread(tmp_path / "b.tif"))


def test_a_killed_zarr_run_keeps_the_earlier_output(model_path, tmp_path, isbi_small):
    import zarr

    image = tmp_path / "big.tif"
    tifffile.imwrite(image, np.tile(isbi_small[0][:, :64, :64], (10, 1, 1)),
                     photometric="minisblack")
    earlier = tmp_path / "m.zarr"
    zarr.create_array(str(earlier), shape=(1, 4), chunks=(1, 4), dtype="uint8")
    zarr.open_array(str(earlier), mode="r+")[:] = 7
    before = _contents(earlier)
    script = Path(sys.executable).parent / "napari-unet"
    process = subprocess.Popen(
        [str(script), "predict", model_path, image, "-o", earlier, "--overwrite",
         "--block", "1,16,16", "--device", "cpu"], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    while "block" not in seen:  # the bar counts blocks: prediction runs
        char = process.stderr.read(1)
        assert char, f"prediction ended before it could be killed: {seen}"
        seen += char
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert _contents(earlier) == before  # not replaced, not touched
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "big.tif", "m.pt", "m.zarr"]
