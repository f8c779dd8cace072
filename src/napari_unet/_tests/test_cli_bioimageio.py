"""cli/bioimageio.py (export-bioimageio) and bioimage.io packages given to predict."""

import sys
import zipfile

import numpy as np
import pytest
import tifffile
import yaml

pytest.importorskip("bioimageio.core")

from napari_unet._tests.test_bioimageio_export import offline  # noqa: F401  (autouse: no network)
from napari_unet.cli.main import main
from napari_unet.model.package import EXTRA


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def stack(tmp_path, isbi_small):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, isbi_small[0][:2, :60, :70], photometric="minisblack")
    return path


def test_export_prints_each_step_and_writes_a_tested_package(model_path, tmp_path, capsys):
    output = tmp_path / "m.zip"
    code, out, err = run(["export-bioimageio", model_path, "-o", output, "--name", "my tiny net",
                          "--authors", "Jane Doe", "John Roe", "--tags", "fly", "larva",
                          "--license", "MIT", "--description", "A test."], capsys)
    assert code == 0, err
    steps = [line.split(" ...")[0] for line in out.splitlines()[:-1]]
    assert steps == ["reading the model", "test tensors", "cover image", "validation scores",
                     "weights", "writing the package", "testing the package with bioimageio.core"]
    assert out.splitlines()[-1] == (f"wrote {output} (bioimage.io model, pytorch_state_dict and "
                                    "torchscript weights; it passed bioimageio.core's test)")
    rdf = yaml.safe_load(zipfile.ZipFile(output).read("rdf.yaml"))
    assert rdf["name"] == "my tiny net" and rdf["license"] == "MIT"
    assert rdf["description"] == "A test."
    assert [a["name"] for a in rdf["authors"]] == ["Jane Doe", "John Roe"]
    assert {"fly", "larva", "napari-unet"} <= set(rdf["tags"])
    # again, without --overwrite: one line, exit 2, the package untouched
    before = output.read_bytes()
    code, out, err = run(["export-bioimageio", model_path, "-o", output, "--no-check"], capsys)
    assert code == 2 and err == f"napari-unet export-bioimageio: error: {output} exists; use " \
        "--overwrite to replace it\n"
    assert output.read_bytes() == before


@pytest.mark.parametrize("flags, message", [
    (["--license", "mine"], "license 'mine' is not an SPDX license identifier"),
    (["--name", "a/b/c"], "name 'a/b/c': use 5 to 128 letters"),
])
def test_export_mistakes_exit_2_in_one_line(model_path, tmp_path, capsys, flags, message):
    code, _, err = run(["export-bioimageio", model_path, "-o", tmp_path / "p.zip", *flags],
                         capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "p.zip").exists()


def test_export_without_the_extra_names_the_pip_command(model_path, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)
    code, _, err = run(["export-bioimageio", model_path, "-o", tmp_path / "p.zip"], capsys)
    assert code == 2
    assert err == ("napari-unet export-bioimageio: error: writing a bioimage.io package needs "
                   f"bioimageio.core: {EXTRA}\n")


def test_predict_with_our_package_writes_what_the_model_file_writes(model_path, stack, tmp_path,
                                                                     capsys):
    package = tmp_path / "m.zip"
    assert run(["export-bioimageio", model_path, "-o", package, "--no-check"], capsys)[0] == 0
    for model, name in ((model_path, "file"), (package, "package")):
        code, _, err = run(["predict", model, stack, "-o", tmp_path / f"{name}.tif",
                            "--probabilities", tmp_path / f"{name}-p.tif", "--device", "cpu"],
                           capsys)
        assert code == 0, err
    for suffix in (".tif", "-p.tif"):
        assert np.array_equal(tifffile.imread(tmp_path / f"file{suffix}"),
                              tifffile.imread(tmp_path / f"package{suffix}"))


def test_predict_with_another_tools_package(tmp_path, stack, capsys):
    from napari_unet._tests.test_foreign import write_foreign_package

    package = write_foreign_package(tmp_path / "other")
    code, out, err = run(["predict", package, stack, "-o", tmp_path / "mask.tif",
                          "--threshold", "0.6", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "computing the mask (threshold 0.6)" in out
    mask = tifffile.imread(tmp_path / "mask.tif")
    assert mask.shape == (2, 60, 70) and set(np.unique(mask)) <= {0, 255}
    code, _, err = run(["predict", package, stack, "-o", tmp_path / "m2.tif", "--tta"], capsys)
    assert code == 2 and "--tta works with napari-unet models only" in err
    code, _, err = run(["predict", package, stack, "-o", tmp_path / "m3.zarr"], capsys)
    assert code == 2 and "predicts images in memory only" in err


def test_predict_with_a_damaged_package_exits_2(tmp_path, stack, capsys):
    damaged = tmp_path / "broken.zip"
    damaged.write_bytes(b"PK\x03\x04 not a zip")
    code, _, err = run(["predict", damaged, stack, "-o", tmp_path / "mask.tif"], capsys)
    assert code == 2 and "damaged zip file" in err and err.count("\n") == 1
    assert not (tmp_path / "mask.tif").exists()
