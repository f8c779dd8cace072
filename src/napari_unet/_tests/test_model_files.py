import os

import pytest
import torch

from napari_unet.config import Config
from napari_unet.errors import InputError
from napari_unet.model.files import (
    BUNDLED,
    FORMAT,
    ModelFile,
    check_model_files,
    load_model,
    make_model,
    save_model,
)
from napari_unet.model.normalization import Normalization


def model_file(config=None):
    config = config or Config().replace(model={"depth": 2, "base_channels": 2})
    torch.manual_seed(0)
    return ModelFile(config, Normalization(1.0, 200.0, 0.5, 0.2),
                     make_model(config).state_dict(), [{"epoch": 1, "v_rand": 0.5}],
                     {"epoch": 1, "torch_rng": torch.get_rng_state()})


def test_round_trip(tmp_path):
    original = model_file()
    loaded = load_model(save_model(tmp_path / "m.pt", original))
    assert loaded.config == original.config
    assert loaded.normalization == original.normalization
    assert loaded.history == original.history
    assert torch.equal(loaded.training_state["torch_rng"], original.training_state["torch_rng"])
    for key, value in original.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)
    net = loaded.build_model()
    assert not net.training and net.depth == 2


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": Payload(str(target))}, path)
    with pytest.raises(InputError, match="refused: the file holds Python objects"):
        load_model(path)
    assert not target.exists()
    # An unsafe load would have run it: the payload is real.
    torch.load(path, weights_only=False)["payload"].close()
    assert target.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00garbage", "not a napari-unet model file"),
        ({"weights": torch.zeros(2)}, "not a napari-unet model file"),
        ({"format": FORMAT, "version": 99}, "newer than this napari-unet reads"),
        ({"format": FORMAT, "version": 1, "config": {}}, "damaged napari-unet model file"),
    ],
)
def test_foreign_files(tmp_path, content, message):
    path = tmp_path / "m.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(InputError, match=message):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "none.pt")


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_model(tmp_path / "m.pt", model_file())
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(InputError, match="No space left on device"):
        save_model(path, model_file())
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_threshold_comes_from_the_latest_validation():
    model = model_file()
    assert model.threshold == 0.5
    model.history.append({"epoch": 2, "threshold": 0.7})
    model.history.append({"epoch": 3})
    assert model.threshold == 0.7


def test_describe_names_network_training_and_threshold():
    model = model_file()
    model.history.clear()
    m = model.config.model
    assert model.describe() == (f"depth {m.depth}, width {m.base_channels}, {m.padding} padding; "
                                "threshold 0.50")
    model.history += [{"step": 40, "v_rand": 0.8, "threshold": 0.6},
                      {"step": 80, "v_rand": 0.7, "threshold": 0.7}]
    assert model.describe().endswith("; trained 80 steps, best V_rand 0.800; threshold 0.70")


@pytest.mark.parametrize("case", ["input", "last is an input", "bundled", "folder", "exists",
                                  "last exists", "replace"])
def test_model_files_of_a_run_never_lose_a_file(tmp_path, case):
    output, last, image = tmp_path / "m.pt", tmp_path / "m.last.pt", tmp_path / "em.tif"
    image.write_bytes(b"em")
    if case == "input":
        output = image
    elif case == "last is an input":
        last = image
    elif case == "bundled":
        output = BUNDLED["isbi2012"]
    elif case == "folder":
        output.mkdir()
    elif case in ("last exists", "replace"):
        last.write_bytes(b"an earlier run")
    elif case == "exists":
        output.write_bytes(b"an earlier run")
    message = {
        "input": f"-o {image} is the image: an input is never replaced, even when overwriting",
        "last is an input": f"last of -o {image} is the image: an input",
        "bundled": f"-o {output} is a model installed with napari-unet; choose another name",
        "folder": f"-o {output} is a folder; name the model file, e.g. {output / 'model.pt'}",
        "exists": f"{output} exists; use --overwrite",
        "last exists": f"{last} exists; use --overwrite",
    }.get(case)

    def check():
        check_model_files(output, last, {"the image": image}, replace=case == "replace",
                          names=("-o", "last of -o"), to_replace="use --overwrite")

    if message is None:
        check()
        return
    with pytest.raises(InputError) as error:
        check()
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
