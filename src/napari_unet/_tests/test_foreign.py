"""prediction/foreign.py and pipeline.open_model: bioimage.io packages of other tools."""

import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

pytest.importorskip("bioimageio.core")

from napari_unet.errors import InputError
from napari_unet.io.sample import isbi2012
from napari_unet.jobs import drain
from napari_unet.model.files import ModelFile
from napari_unet.prediction.foreign import ForeignModel, open_foreign, predict_foreign
from napari_unet.prediction.pipeline import (
    Prediction,
    image_job,
    model_tile,
    open_model,
    prediction_job,
    volume_job,
)

HALO = 4


class Boundaries(nn.Module):
    """A stand-in for another tool's network: one 3x3 convolution and a sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


def network() -> torch.jit.ScriptModule:
    torch.manual_seed(3)
    net = Boundaries().eval()
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([[[[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0],
                                              [0.0, -1.0, 0.0]]]]))
        net.conv.bias.fill_(-0.5)
    return torch.jit.script(net)


def zero_mean_unit_variance(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)


def write_foreign_package(folder: Path) -> Path:
    """Build, with bioimageio.spec, a package napari-unet did not write: TorchScript weights,
    zero_mean_unit_variance preprocessing, one output channel named for boundaries."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as spec

    folder.mkdir(parents=True, exist_ok=True)
    net = network()
    net.save(str(folder / "weights.pt"))
    image = isbi2012()[0][0, :64, :64].astype(np.float32)
    np.save(folder / "input.npy", image[None, None])
    with torch.no_grad():
        out = net(torch.from_numpy(zero_mean_unit_variance(image))[None, None]).numpy()
    np.save(folder / "output.npy", out)
    (folder / "README.md").write_text("# Boundaries\n\n## Validation\n\nNone.\n")
    size = spec.ParameterizedSize(min=16, step=8)

    def halo_axis(name):
        return spec.SpaceOutputAxisWithHalo(
            id=spec.AxisId(name), halo=HALO,
            size=spec.SizeReference(tensor_id=spec.TensorId("image"), axis_id=spec.AxisId(name)))

    descr = spec.ModelDescr(
        name="some other boundary model", description="not written by napari-unet",
        authors=[spec.Author(name="Someone Else")],
        cite=[spec.CiteEntry(text="a paper", doi=spec.Doi("10.1000/182"))],
        license=spec.LicenseId("MIT"),
        documentation=spec.FileDescr(source=folder / "README.md"),
        inputs=[spec.InputTensorDescr(
            id=spec.TensorId("image"),
            axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[spec.Identifier("em")]),
                  spec.SpaceInputAxis(id=spec.AxisId("y"), size=size),
                  spec.SpaceInputAxis(id=spec.AxisId("x"), size=size)],
            test_tensor=spec.FileDescr(source=folder / "input.npy"),
            preprocessing=[spec.ZeroMeanUnitVarianceDescr(
                kwargs=spec.ZeroMeanUnitVarianceKwargs(axes=[spec.AxisId("y"),
                                                             spec.AxisId("x")]))])],
        outputs=[spec.OutputTensorDescr(
            id=spec.TensorId("boundaries"),
            axes=[spec.BatchAxis(),
                  spec.ChannelAxis(channel_names=[spec.Identifier("boundaries")]),
                  halo_axis("y"), halo_axis("x")],
            test_tensor=spec.FileDescr(source=folder / "output.npy"))],
        weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=spec.Version("2.1"))),
    )
    return Path(save_bioimageio_package(descr, output_path=folder / "other.zip"))


@pytest.fixture(scope="module")
def offline():
    def refuse(*args, **kwargs):
        raise OSError("the network is blocked in this test")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, offline):
    return write_foreign_package(tmp_path_factory.mktemp("foreign"))


def edited(source: Path, target: Path, change) -> Path:
    """A copy of a package whose rdf.yaml ``change`` edited in place."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                change(rdf)
                data = yaml.safe_dump(rdf).encode()
            new.writestr(item, data)
    return target


def test_opens_as_a_foreign_model(foreign):
    model = open_model(foreign)
    assert isinstance(model, ForeignModel)
    assert model.weights_format == "torchscript" and model.halo == HALO
    assert (model.channel, model.channel_name) == (0, "boundaries")
    assert model.threshold == 0.5 and model.close_gaps is None
    assert model_tile(model) == model.tile
    assert "some other boundary model" in model.describe()


def test_predicts_as_bioimageio_core_does_with_the_same_blocks(foreign):
    import bioimageio.core as core
    from bioimageio.core import Tensor

    model = open_foreign(foreign)
    image = isbi2012()[0][1, :100, :90]
    ours = drain(predict_foreign(model, image, tile=32))
    tensor = Tensor.from_numpy(image.astype(np.float32)[None, None],
                               dims=("batch", "channel", "y", "x"))
    blocks = {"image": {"batch": 1, "channel": 1, "y": 32 + 2 * HALO, "x": 32 + 2 * HALO}}
    theirs = core.predict(model=model.description, inputs={"image": tensor},
                          input_block_shape=blocks)
    np.testing.assert_allclose(ours, theirs.members["boundaries"].data.to_numpy()[0, 0],
                               atol=1e-6)
    # and, away from the border the package mirrors, what the network gives on the whole slice
    with torch.no_grad():
        whole = network()(torch.from_numpy(zero_mean_unit_variance(
            image.astype(np.float32)))[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(ours[2:-2, 2:-2], whole[2:-2, 2:-2], atol=1e-5)


def test_stacks_go_slice_by_slice_with_progress(foreign):
    model = open_foreign(foreign)
    stack = isbi2012()[0][:2, :40, :50]
    progress = []
    job = predict_foreign(model, stack, tile=24)
    try:
        while True:
            progress.append(next(job))
    except StopIteration as stop:
        result = stop.value
    assert result.shape == stack.shape and result.dtype == np.float32
    assert 0.0 <= result.min() and result.max() <= 1.0
    assert progress[-1].done == progress[-1].total == len(progress)
    single = drain(predict_foreign(model, stack[1], tile=24))
    np.testing.assert_array_equal(result[1], single)


def test_slices_smaller_than_the_smallest_input_are_mirrored_up(foreign):
    model = open_foreign(foreign)
    tiny = isbi2012()[0][0, :10, :12]
    assert drain(predict_foreign(model, tiny)).shape == (10, 12)


def test_image_job_thresholds_and_labels_cells(foreign):
    model = open_model(foreign)
    image = isbi2012()[0][2, :64, :64]
    result = drain(image_job(model, image, threshold=0.5, min_size=10, device="cpu"))
    assert isinstance(result, Prediction)
    assert set(np.unique(result.mask)) <= {1, 2}
    assert np.array_equal(result.mask == 1, result.probabilities > 0.5)
    assert result.cells is not None and result.cells.shape == image.shape
    with pytest.raises(InputError, match="test-time augmentation"):
        drain(image_job(model, image, threshold=0.5, min_size=None, device="cpu", tta=True))


def test_own_package_runs_the_model_file_path_unchanged(model_path, tmp_path, offline):
    from napari_unet.bioimageio.export import export_package

    package = export_package(model_path, tmp_path / "own.zip", check=False)
    opened = open_model(package)
    assert isinstance(opened, ModelFile)
    image = isbi2012()[0][0, :96, :80]
    expected = drain(prediction_job(
        opened.build_model(), opened.normalization.unit(image), opened.normalization,
        threshold=0.42, min_size=None, device=torch.device("cpu"), tile=64))
    got = drain(image_job(opened, image, threshold=0.42, min_size=None,
                          device=torch.device("cpu"), tile=64))
    assert np.array_equal(got.probabilities, expected.probabilities)


def test_large_volumes_need_a_napari_unet_model(foreign, tmp_path):
    with pytest.raises(InputError, match="predicts images in memory only"):
        drain(volume_job(foreign, np.zeros((1, 32, 32), np.uint8), tmp_path / "p.zarr",
                         device=torch.device("cpu")))


def onnx_only(rdf):
    rdf["weights"] = {"onnx": {"source": "weights.pt", "opset_version": 15}}


def two_channels(rdf):
    rdf["outputs"][0]["axes"][1]["channel_names"] = ["background", "foreground"]


@pytest.mark.parametrize("change, message", [
    (lambda rdf: rdf["inputs"][0]["axes"].insert(
        2, {"type": "space", "id": "z", "size": {"min": 4, "step": 4}}),
     "napari-unet runs 2D models (y, x); this one takes (batch, channel, z, y, x)"),
    (lambda rdf: rdf["inputs"][0]["axes"][1].update(channel_names=["r", "g", "b"]),
     "napari-unet runs single-channel models; this one takes 3 channels"),
    (onnx_only, "weights in onnx only; napari-unet runs torchscript or pytorch_state_dict"),
    (lambda rdf: rdf["weights"]["torchscript"].update(source="https://example.org/w.pt"),
     "its weights are at a URL (https://example.org/w.pt)"),
    (two_channels, "the output has channels background, foreground; say which one is "
     "P(membrane) (--channel N)"),
    (lambda rdf: rdf["outputs"][0]["axes"][2].update(
        size={"tensor_id": "image", "axis_id": "y", "offset": -4}),
     "is not the size of its input"),
])
def test_packages_napari_unet_cannot_run_get_one_line(foreign, tmp_path, change, message):
    path = edited(foreign, tmp_path / "edited.zip", change)
    with pytest.raises(InputError) as err:
        open_model(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_output_channel_can_be_named(foreign, tmp_path):
    path = edited(foreign, tmp_path / "two.zip", two_channels)
    assert open_model(path, channel=0).channel_name == "background"
    with pytest.raises(InputError, match=r"channel 2: the output has channels 0\.\.0"):
        open_model(foreign, channel=2)


def test_the_test_package_itself_passes_bioimageio_core_test(foreign):
    from napari_unet.bioimageio.check import check_package

    check_package(foreign)
