"""model/package.py: bioimage.io packages as model files, read without bioimageio.core."""

import dataclasses
import hashlib
import io
import json
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml

from napari_unet.errors import InputError
from napari_unet.model.files import FORMAT, VERSION, ModelFile, load_model, make_model
from napari_unet.model.normalization import Normalization
from napari_unet.model.package import (
    EXTRA,
    is_package,
    load_package,
    open_package,
    require_bioimageio,
)


@pytest.fixture
def model_file(tiny_config):
    torch.manual_seed(1)
    norm = Normalization(7.0, 240.0, 0.5114651076370859, 0.18880869281450968)
    return ModelFile(tiny_config, norm, make_model(tiny_config).state_dict(),
                     history=[{"epoch": 2, "step": 8, "threshold": 0.37, "v_rand": 0.91}])


def weights_bytes(state_dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def own_rdf(model_file, weights: bytes, **changes) -> dict:
    """The parts of a napari-unet package's description that reading it back uses."""
    rdf = {
        "type": "model", "format_version": "0.5.12", "name": "napari-unet test",
        "weights": {"pytorch_state_dict": {"source": "weights.pt",
                                           "sha256": hashlib.sha256(weights).hexdigest()}},
        "config": {"napari_unet": {
            "format": FORMAT, "version": VERSION, "config": model_file.config.to_dict(),
            "normalization": dataclasses.asdict(model_file.normalization),
            "history": model_file.history}},
    }
    rdf.update(changes)
    return rdf


def write_zip(path, files: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data if isinstance(data, bytes) else yaml.safe_dump(data))
    return path


@pytest.fixture
def package(tmp_path, model_file):
    weights = weights_bytes(model_file.state_dict)
    return write_zip(tmp_path / "own.zip", {"rdf.yaml": own_rdf(model_file, weights),
                                            "weights.pt": weights})


def same_model(a: ModelFile, b: ModelFile) -> bool:
    return (a.config == b.config and a.normalization == b.normalization
            and a.history == b.history and a.state_dict.keys() == b.state_dict.keys()
            and all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict))


def test_packages_are_told_from_model_files(tmp_path, model_path, package):
    assert not is_package(model_path)  # a torch file is a zip file too, without rdf.yaml
    assert is_package(package)
    assert is_package(tmp_path / "missing.zip")
    assert is_package(tmp_path / "rdf.yaml")
    assert not is_package("isbi2012")


def test_own_package_reads_back_exactly_through_load_model(package, model_file):
    loaded = load_model(package)
    assert same_model(loaded, model_file)
    assert loaded.threshold == 0.37
    assert loaded.training_state == {}


def test_unpacked_package_by_its_rdf_yaml(tmp_path, package, model_file):
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(package).extractall(folder)
    assert same_model(load_package(folder / "rdf.yaml"), model_file)


def test_description_may_be_called_bioimageio_yaml(tmp_path, model_file):
    weights = weights_bytes(model_file.state_dict)
    path = write_zip(tmp_path / "p.zip", {"bioimageio.yaml": own_rdf(model_file, weights),
                                          "weights.pt": weights})
    assert same_model(load_package(path), model_file)


@pytest.mark.parametrize("make, message", [
    (lambda p, mf, w: p.write_bytes(b"PK\x03\x04 not really a zip"), "damaged zip file"),
    (lambda p, mf, w: write_zip(p, {"weights.pt": w}), "a zip file without rdf.yaml"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": {"type": "dataset", "format_version": "0.3.0",
                                                 "name": "some data"}}),
     "a bioimage.io dataset description, not a model"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": own_rdf(mf, w, format_version="0.6.0"),
                                    "weights.pt": w}),
     "format version 0.6.0 is not supported; napari-unet reads 0.4 and 0.5"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": own_rdf(mf, w)}),
     "weights.pt, named in rdf.yaml, is missing from the package"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": own_rdf(mf, w), "weights.pt": w[:-1] + b"x"}),
     "does not match its SHA-256 in rdf.yaml: the package is damaged"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": b"name: [unclosed", "weights.pt": w}),
     "rdf.yaml is not valid YAML"),
    (lambda p, mf, w: write_zip(p, {"rdf.yaml": {"type": "model", "format_version": "0.5.3",
                                                 "name": "theirs"}}),
     "not written by napari-unet; it can predict"),
])
def test_bad_packages_get_one_line(tmp_path, model_file, make, message):
    path = tmp_path / "bad.zip"
    make(path, model_file, weights_bytes(model_file.state_dict))
    with pytest.raises(InputError, match="^" + str(path).replace(".", r"\.")) as err:
        load_model(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_newer_napari_unet_format_is_refused(tmp_path, model_file):
    weights = weights_bytes(model_file.state_dict)
    rdf = own_rdf(model_file, weights)
    rdf["config"]["napari_unet"]["version"] = VERSION + 1
    path = write_zip(tmp_path / "new.zip", {"rdf.yaml": rdf, "weights.pt": weights})
    with pytest.raises(InputError, match="newer than this napari-unet reads"):
        load_model(path)


class Payload:
    """Pickles as a call to open(target, 'w'): loading it unsafely creates the file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_weights_carrying_code_are_refused_unrun(tmp_path, model_file):
    target = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"head.weight": torch.zeros(1), "evil": Payload(str(target))}, buffer)
    weights = buffer.getvalue()
    path = write_zip(tmp_path / "evil.zip", {"rdf.yaml": own_rdf(model_file, weights),
                                             "weights.pt": weights})
    with pytest.raises(InputError, match="could run code"):
        load_model(path)
    assert not target.exists()


def test_files_at_urls_and_outside_the_package_are_refused(tmp_path, package):
    opened = open_package(package)
    with pytest.raises(InputError, match="at a URL"):
        opened.read("https://example.org/weights.pt")
    with pytest.raises(InputError, match="outside the package"):
        opened.read("../weights.pt")


def test_missing_package(tmp_path):
    with pytest.raises(InputError, match=r"no such bioimage\.io package"):
        load_model(tmp_path / "nothing.zip")


def test_without_the_extra_one_line_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)
    with pytest.raises(InputError) as err:
        require_bioimageio("writing a bioimage.io package")
    assert str(err.value) == f"writing a bioimage.io package needs bioimageio.core: {EXTRA}"
    assert EXTRA == 'pip install "napari-unet-em[bioimageio]"'


def test_no_core_module_imports_bioimageio():
    # the extra is optional: the core, the command line and the reader load without it
    from napari_unet._tests.test_import import core_modules

    code = ("import importlib, json, sys\n"
            f"for name in {core_modules()!r}: importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'bioimageio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
