"""bioimageio/: packages pass bioimageio.core's test, offline, and read back as the same model."""

import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("bioimageio.core")

from napari_unet.bioimageio import card, export
from napari_unet.bioimageio.check import PackageCheckError, check_package
from napari_unet.bioimageio.export import ExportSettings, export_package
from napari_unet.errors import InputError
from napari_unet.io.sample import isbi2012
from napari_unet.model import network
from napari_unet.model.files import ModelFile, load_model, make_model, save_model
from napari_unet.model.normalization import Normalization
from napari_unet.model.sizes import progression
from napari_unet.prediction.predict import predict_probabilities

ATTEMPTS: list = []


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No test here may reach the network: every connection attempt fails and is recorded."""
    def refuse(*args, **kwargs):
        ATTEMPTS.append(args)
        raise OSError("the network is blocked in this test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield
    assert ATTEMPTS == [], f"something tried to reach the network: {ATTEMPTS}"


def tiny_model(folder: Path, name: str, tiny_config, *, history=True, **model) -> Path:
    config = tiny_config.replace(model=model) if model else tiny_config
    torch.manual_seed(0)
    scores = [{"epoch": 3, "step": 12, "threshold": 0.42, "v_rand": 0.812, "v_info": 0.873,
               "pixel_error": 0.123}]
    model_file = ModelFile(config, Normalization(7.0, 240.0, 0.5114651076370859, 0.1888),
                           make_model(config).state_dict(), history=scores if history else [])
    return save_model(folder / name, model_file)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("bioimageio")


@pytest.fixture(scope="module")
def valid_package(folder):
    from napari_unet.config import Config

    config = Config().replace(model={"depth": 3, "base_channels": 4},
                              train={"tile": 64, "val_slices": (3,)})
    model = tiny_model(folder, "valid.pt", config)
    settings = ExportSettings(name="tiny valid U-Net", authors=("Jane Doe", "John Roe"),
                              description="A tiny test network.", license="MIT",
                              tags=("test",))
    return model, export_package(model, folder / "valid.zip", settings, check=False)


@pytest.fixture(scope="module")
def same_package(folder):
    from napari_unet.config import Config

    config = Config().replace(model={"depth": 3, "base_channels": 4, "padding": "same",
                                     "batch_norm": True}, train={"tile": 64})
    model = tiny_model(folder, "same.pt", config)
    return model, export_package(model, folder / "same.zip", check=False)


def rdf_of(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def test_the_network_is_really_blocked():
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    ATTEMPTS.clear()


@pytest.mark.parametrize("which", ["valid_package", "same_package"])
@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_test_passes_for_each_weight_format(request, which, weight_format):
    _, path = request.getfixturevalue(which)
    summary = check_package(path, weight_format=weight_format)
    names = [d.name for d in summary.details if d.status == "passed"]
    assert f"Reproduce test outputs from test inputs ({weight_format})" in names
    assert any(n.startswith(f"Run {weight_format} inference") for n in names)


@pytest.mark.parametrize("which", ["valid_package", "same_package"])
def test_reads_back_as_the_same_model_with_the_same_probabilities(request, which):
    model, path = request.getfixturevalue(which)
    original, loaded = load_model(model), load_model(path)
    assert loaded.config == original.config
    assert loaded.normalization == original.normalization
    assert loaded.threshold == original.threshold == 0.42
    assert loaded.history == original.history
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in original.state_dict.items())
    image = isbi2012()[0][0, :150, :130]
    norm = original.normalization
    first = predict_probabilities(original.build_model(), norm.unit(image), norm, tile=64)
    again = predict_probabilities(loaded.build_model(), norm.unit(image), norm, tile=64)
    assert np.array_equal(first, again)


def test_description_of_a_valid_padding_network(valid_package):
    _, path = valid_package
    rdf = rdf_of(path)
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    assert rdf["name"] == "tiny valid U-Net" and rdf["license"] == "MIT"
    assert [a["name"] for a in rdf["authors"]] == ["Jane Doe", "John Roe"]
    assert {"unet", "electron-microscopy", "test"} <= set(rdf["tags"])
    assert {c["doi"] for c in rdf["cite"]} == {"10.1007/978-3-319-24574-4_28",
                                                "10.3389/fnana.2015.00142"}
    (raw,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in raw["axes"]] == ["batch", "channel", "space", "space"]
    first, step, margin = progression(3, "valid")
    assert raw["axes"][2]["size"] == {"min": first, "step": step} == raw["axes"][3]["size"]
    assert [a.get("id") for a in out["axes"][2:]] == ["y", "x"]
    assert all(a["halo"] == margin // 2 and a["size"] == {"tensor_id": "raw", "axis_id": a["id"]}
               for a in out["axes"][2:])
    assert out["axes"][1]["channel_names"] == ["interior", "membrane"]
    assert out["postprocessing"][0]["id"] == "softmax"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    architecture = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert architecture["callable"] == "PlainUNet"
    assert architecture["kwargs"]["keep_size"] is True and architecture["kwargs"]["depth"] == 3
    with zipfile.ZipFile(path) as archive:
        assert archive.read(architecture["source"]) == Path(network.__file__).read_bytes()
    assert rdf["config"]["napari_unet"]["normalization"]["mean"] == 0.5114651076370859


def test_same_padding_declares_its_context_as_halo(same_package):
    _, path = same_package
    rdf = rdf_of(path)
    size = rdf["inputs"][0]["axes"][2]["size"]
    halo = rdf["outputs"][0]["axes"][2]["halo"]
    assert halo == 32 and size["step"] == 4 and size["min"] - 2 * halo >= size["step"]
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]["keep_size"] is False


def test_preprocessing_is_the_stored_normalisation(valid_package):
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_description

    model, path = valid_package
    norm = load_model(model).normalization
    raw = np.random.default_rng(0).uniform(-20, 300, size=(1, 1, 60, 60)).astype(np.float32)
    sample = Sample(members={"raw": Tensor.from_numpy(raw, dims=("batch", "channel", "y", "x"))},
                    stat={}, id=0)
    pipeline = create_prediction_pipeline(load_description(path, perform_io_checks=False),
                                          devices=["cpu"], weights_format="torchscript")
    pipeline.apply_preprocessing(sample)
    np.testing.assert_allclose(sample.members["raw"].data.to_numpy(),
                               norm.network(norm.unit(raw)), rtol=1e-5, atol=1e-5)


def test_documentation_cover_and_test_tensors(valid_package):
    _, path = valid_package
    with zipfile.ZipFile(path) as archive:
        readme = archive.read("README.md").decode()
        cover = archive.read("cover.png")
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
    assert "## Validation" in readme and "| V_rand" in readme and "0.812" in readme
    assert "epoch 3" in readme and "Ronneberger" in readme and "Arganda-Carreras" in readme
    assert "10.1007/978-3-319-24574-4_28" in readme
    assert "| optimizer | sgd, learning rate 0.01" in readme
    import imageio.v3 as iio

    picture = iio.imread(cover)
    assert picture.shape[1] == 2 * picture.shape[0]
    assert test_input.shape[:2] == (1, 1) and test_input.dtype == np.float32
    assert test_output.shape == (1, 2, *test_input.shape[2:])
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)


def test_scores_are_computed_on_the_sample_when_the_model_has_none(folder, tiny_config):
    model = tiny_model(folder, "unscored.pt", tiny_config, history=False)
    docs = folder / "notes.md"
    docs.write_text("# My model\n\nTrained on my data.\n")
    path = export_package(model, folder / "unscored.zip",
                          ExportSettings(documentation=docs), check=False)
    readme = zipfile.ZipFile(path).read("README.md").decode()
    assert readme.startswith("# My model\n\nTrained on my data.\n")
    assert "Computed at export by napari-unet on slices 3" in readme
    row = next(line for line in readme.splitlines() if line.startswith("| V_rand"))
    assert "n/a" not in row
    assert rdf_of(path)["name"] == "napari-unet unscored"


def test_validation_falls_back_to_fixed_sample_slices():
    model_file = load_model("isbi2012")
    assert card.validation_slices(model_file, 30) == (5, 15, 25)
    unnamed = ModelFile(model_file.config.replace(train={"val_slices": None}),
                        model_file.normalization, model_file.state_dict)
    assert card.validation_slices(unnamed, 30) == card.FALLBACK_SLICES


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("settings, overwrite, message", [
    (ExportSettings(license="my own"), False, "not an SPDX license identifier"),
    (ExportSettings(name="x/y"), False, "use 5 to 128 letters"),
    (ExportSettings(documentation=Path("/no/such/README.md")), False, "no such file"),
    (ExportSettings(), False, "exists; use --overwrite"),
])
def test_bad_settings_or_existing_output_write_nothing(folder, valid_package, settings,
                                                       overwrite, message):
    model, path = valid_package
    before, content = listing(folder), path.read_bytes()
    with pytest.raises(InputError, match=message):
        export_package(model, path, settings, overwrite=overwrite)
    assert listing(folder) == before and path.read_bytes() == content


def test_an_input_is_never_the_output(folder, valid_package, tmp_path):
    model, path = valid_package
    with pytest.raises(InputError, match="never replaced"):
        export_package(path, path, overwrite=True)  # re-exporting a package onto itself
    with pytest.raises(InputError, match=r"a bioimage\.io package is a \.zip file"):
        export_package(model, tmp_path / "package.tar")
    with pytest.raises(InputError, match="no such folder"):
        export_package(model, tmp_path / "missing" / "p.zip")
    assert listing(tmp_path) == set()


def test_a_damaged_model_writes_nothing(tmp_path):
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(InputError, match="damaged zip file"):
        export_package(damaged, tmp_path / "out.zip")
    assert listing(tmp_path) == {"damaged.zip"}


def test_only_one_channel_in_two_classes_out(folder, tiny_config, tmp_path):
    model = tiny_model(folder, "three.pt", tiny_config, out_channels=3)
    with pytest.raises(InputError, match="1 grey channel in, 2 classes"):
        export_package(model, tmp_path / "three.zip")
    assert listing(tmp_path) == set()


def test_a_package_failing_the_test_is_not_written(tmp_path, valid_package, monkeypatch):
    model, _ = valid_package

    def fail(path, **kwargs):
        raise PackageCheckError(f"{path}: bioimageio.core's test failed: on purpose")

    monkeypatch.setattr(export, "check_package", fail)
    with pytest.raises(PackageCheckError, match="on purpose"):
        export_package(model, tmp_path / "out.zip")
    assert listing(tmp_path) == set()  # neither the package nor its build folder


def test_overwrite_replaces_a_package(tmp_path, valid_package):
    model, _ = valid_package
    output = tmp_path / "out.zip"
    output.write_bytes(b"old")
    export_package(model, output, overwrite=True, check=False)
    assert zipfile.is_zipfile(output)
    assert listing(tmp_path) == {"out.zip"}


def test_progress_names_each_step_in_order(tmp_path, valid_package):
    model, _ = valid_package
    steps = []
    job = export.export_job(model, tmp_path / "p.zip", check=False)
    try:
        while True:
            steps.append(next(job))
    except StopIteration as stop:
        assert stop.value == tmp_path / "p.zip"
    assert [s.step for s in steps] == list(export.STEPS[:-1])
    assert [s.done for s in steps] == list(range(len(steps)))
    assert {s.total for s in steps} == {len(export.STEPS) - 1}


@pytest.mark.slow
def test_bundled_model_round_trip(tmp_path):
    """The real thing: isbi2012 (same padding, batch norm, 16 channels), checked by
    bioimageio.core, read back and predicting exactly as the bundled file."""
    path = export_package("isbi2012", tmp_path / "isbi2012.zip")
    original, loaded = load_model("isbi2012"), load_model(path)
    image = isbi2012()[0][5, 100:356, 60:316]
    norm = original.normalization
    first = predict_probabilities(original.build_model(), norm.unit(image), norm, tile=192)
    again = predict_probabilities(loaded.build_model(), loaded.normalization.unit(image),
                                  loaded.normalization, tile=192)
    assert np.array_equal(first, again)
    readme = zipfile.ZipFile(path).read("README.md").decode()
    assert "0.980" in readme and "epoch 16" in readme and "5, 15, 25" in readme
