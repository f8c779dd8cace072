import subprocess
import sys
from pathlib import Path

import pytest

import napari_unet
from napari_unet.cli.main import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-unet {napari_unet.__version__}"


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: napari-unet" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "demo" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["frobnicate"])
    assert exit_.value.code == 2


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "napari-unet"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"napari-unet {napari_unet.__version__}"


@pytest.mark.parametrize("module", ["napari_unet", "napari_unet.cli"])
def test_runs_as_a_module(module):
    out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"napari-unet {napari_unet.__version__}"


def test_demo_without_napari_says_what_to_install(capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "napari" else find_spec(name, *a))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "the demo needs napari: install the GUI extra" in err and len(err.splitlines()) == 1
