import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_unet
from napari_unet.cli.main import main
from napari_unet.io.stacks import write_mask


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


def test_a_closed_pipe_ends_quietly(tiffs):
    labels = tifffile.imread(tiffs / "isbi.tif")
    write_mask(tiffs / "mask.tif", np.where(labels == 0, 1, 2))
    script = Path(sys.executable).parent / "napari-unet"
    process = subprocess.Popen([str(script), "evaluate", tiffs / "mask.tif", tiffs / "isbi.tif",
                                "--per-slice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head` ending before the scores are printed
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and err == ""


def test_unexpected_errors_print_one_line(tiffs, capsys, monkeypatch):
    import napari_unet.evaluation.scores

    def broken(*_, **__):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(napari_unet.evaluation.scores, "evaluate", broken)
    code = main(["evaluate", str(tiffs / "isbi.tif"), str(tiffs / "isbi.tif")])
    err = capsys.readouterr().err
    assert code == 1 and err.strip().splitlines() == [
        "napari-unet evaluate: error: RuntimeError: something broke (set NAPARI_UNET_DEBUG=1 "
        "to see where)"]
    monkeypatch.setenv("NAPARI_UNET_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["evaluate", str(tiffs / "isbi.tif"), str(tiffs / "isbi.tif")])
