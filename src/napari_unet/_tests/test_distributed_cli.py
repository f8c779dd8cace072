"""``napari-unet train --nproc 2``: torchrun's launcher and two gloo processes, for real."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from napari_unet.cli.launch import without_nproc
from napari_unet.cli.main import main
from napari_unet.model.files import load_model

TINY = ["--device", "cpu", "--depth", "2", "--base-channels", "4", "--padding", "same",
        "--tile", "32", "--batch-size", "2", "--val-slices", "3", "--samples-per-epoch", "6"]


def command(tiffs, *flags, module="napari_unet"):
    return [sys.executable, "-m", module, "train", str(tiffs / "img.tif"),
            str(tiffs / "isbi.tif"), "-o", str(tiffs / "m.pt"), "--nproc", "2", *TINY, *flags]


TESTS = Path(__file__).parent
"""This folder: on the path of the processes started, for `faulty_worker` (an installed
napari-unet, as tox tests it, holds no tests)."""


def start(argv):
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path})


def test_without_nproc():
    assert without_nproc(["train", "a", "--nproc", "2", "-o", "m"]) == ["train", "a", "-o", "m"]
    assert without_nproc(["train", "--nproc=4", "a"]) == ["train", "a"]


def test_ctrl_c_stops_both_processes_and_one_resumes(tiffs, capsys):
    process = start(command(tiffs, "--epochs", "1000"))
    seen = ""
    while "epoch 1:" not in seen:  # process 0 printed the first validation: training runs
        line = process.stdout.readline()
        assert line, "training ended before it could be interrupted: " + process.stderr.read()
        seen += line
    assert "device cpu (1 thread), 2 processes" in seen
    time.sleep(1)
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends to the launcher
    out, err = process.communicate(timeout=120)
    out = seen + out
    assert process.returncode == 130, err
    assert "interrupted: the last model is in" in out
    assert out.count("preset cpu:") == 1  # process 0 alone prints
    assert sorted(p.name for p in tiffs.glob("m*.pt")) == ["m.last.pt", "m.pt"]
    last = load_model(tiffs / "m.last.pt")
    step, position = last.training_state["step"], last.training_state["position"]
    # 3 updates of 2 tiles per epoch; a stop after an epoch's last update validates on resume
    assert step >= 3 and position == 2 * ((step - 1) % 3 + 1)
    # one process goes on with the two processes' run, from where it stopped
    code = main(["train", str(tiffs / "img.tif"), str(tiffs / "isbi.tif"), "-o",
                 str(tiffs / "m.pt"), "--resume", "--epochs", str(step // 3 + 2)])
    assert code == 0, capsys.readouterr().err
    resumed = load_model(tiffs / "m.last.pt")
    assert resumed.training_state["step"] == 3 * (step // 3 + 2)
    assert resumed.history[: len(last.history)] == last.history


def test_a_process_that_fails_brings_the_other_down_with_its_message(tiffs):
    began = time.monotonic()
    process = start(command(tiffs, "--epochs", "1000", module="faulty_worker"))
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, out + err
    # the launcher names the process that failed first and says why, in one line
    assert ("napari-unet train: process 1 failed: OSError: sample 3 could not be read on "
            "process 1") in err
    # process 0 stopped too, said so, and kept the last model
    assert "another process of this run stopped" in out
    assert load_model(tiffs / "m.last.pt").training_state["step"] == 1
    assert "Traceback" not in out + err
    print(f"failure run: {time.monotonic() - began:.0f} s")
