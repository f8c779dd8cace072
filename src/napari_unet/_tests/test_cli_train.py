import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.cli.main import main
from napari_unet.io.stacks import write_mask
from napari_unet.model.files import load_model

TINY_NET = ["--depth", "3", "--base-channels", "4", "--tile", "64", "--batch-size", "2",
            "--device", "cpu"]
TINY = [*TINY_NET, "--samples-per-epoch", "4", "--val-slices", "3"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_evaluate_and_resume(tiffs, capsys):
    model = tiffs / "m.pt"
    code, out, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", model,
                          "--epochs", "1", *TINY], capsys)
    assert code == 0, err
    assert "epoch 1: train_loss" in out and "best model" in out
    assert load_model(model).config.model.depth == 3
    code, out, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", model,
                          "--epochs", "2", "--resume"], capsys)
    assert code == 0, err
    assert load_model(tiffs / "m.last.pt").training_state["epoch"] == 2
    labels = tifffile.imread(tiffs / "isbi.tif")
    write_mask(tiffs / "mask.tif", np.where(labels == 0, 1, 2))
    code, out, _ = run(["evaluate", tiffs / "mask.tif", tiffs / "isbi.tif"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["pixel_error"] == 0 and scores["v_rand"] == 1


def test_config_file_and_flags(tiffs, capsys, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"train": {"epochs": 1, "lr": 0.5}}))
    code, _, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o",
                        tiffs / "m.pt", "--config", tmp_path / "c.json", "--lr", "0.001", *TINY],
                       capsys)
    assert code == 0, err
    config = load_model(tiffs / "m.pt").config
    assert config.train.lr == 0.001 and config.train.epochs == 1


def test_lr_find(tiffs, capsys):
    code, out, _ = run(["lr-find", tiffs / "img.tif", tiffs / "isbi.tif", "--steps", "8",
                        "--json", *TINY_NET], capsys)
    curve = json.loads(out)
    assert code == 0 and len(curve["lr"]) == len(curve["loss"]) <= 8


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("shape", "differs from image shape"),
        ("values", "fit no convention"),
        ("small", "too small to train on"),
        ("tile", "tile must be at least 1"),
        ("device", "device must be one of ['auto', 'cpu', 'cuda', 'mps'], got 'tpu'"),
        ("exists", "exists; use --resume"),
        ("config", "unknown train setting"),
    ],
)
def test_user_mistakes_exit_2(tiffs, capsys, case, message):
    image, labels, extra = tiffs / "img.tif", tiffs / "isbi.tif", []
    if case == "missing":
        image = tiffs / "nope.tif"
    elif case == "shape":
        tifffile.imwrite(tiffs / "l2.tif", np.zeros((2, 128, 128), np.uint8))
        labels = tiffs / "l2.tif"
    elif case == "values":
        tifffile.imwrite(tiffs / "l3.tif", np.full((4, 128, 128), 7, np.uint8),
                         photometric="minisblack")
        labels = tiffs / "l3.tif"
    elif case == "small":
        tifffile.imwrite(tiffs / "i4.tif", np.zeros((4, 4), np.uint8))
        tifffile.imwrite(tiffs / "l4.tif", np.full((4, 4), 2, np.uint8))
        image, labels = tiffs / "i4.tif", tiffs / "l4.tif"
    elif case == "tile":
        extra = ["--tile", "0"]
    elif case == "device":
        extra = ["--device", "tpu"]
    elif case == "exists":
        (tiffs / "m.pt").write_bytes(b"precious")
    elif case == "config":
        (tiffs / "bad.json").write_text('{"train": {"epoch": 1}}')
        extra = ["--config", tiffs / "bad.json"]
    code, _, err = run(["train", image, labels, "-o", tiffs / "m.pt", *TINY, *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    if case == "exists":
        assert (tiffs / "m.pt").read_bytes() == b"precious"


def test_cuda_on_a_machine_without_it(tiffs, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", tiffs / "m.pt",
                        *TINY, "--device", "cuda"], capsys)
    assert code == 2 and "sees no CUDA GPU" in err


def test_ctrl_c_saves_the_last_model(tiffs):
    script = Path(sys.executable).parent / "napari-unet"
    process = subprocess.Popen(
        [str(script), "train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", tiffs / "m.pt",
         "--epochs", "1000", *TINY], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    while "loss=" not in seen:  # the progress bar shows a step's loss: training runs
        char = process.stderr.read(1)
        assert char, "training ended before it could be interrupted"
        seen += char
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    last = load_model(tiffs / "m.last.pt")
    assert last.training_state["step"] >= 1


def test_presets_flags_and_config_file(tiffs, capsys, tmp_path):
    base = ["train", tiffs / "img.tif", tiffs / "isbi.tif", "--epochs", "1", *TINY]
    code, out, err = run([*base, "-o", tiffs / "auto.pt"], capsys)
    assert code == 0, err
    assert out.startswith("preset cpu: depth 3, width 4, same padding, batch norm")
    assert "; membranes x2; threshold 0.6, gaps closed at 0.2;" in out.splitlines()[0]
    cpu = load_model(tiffs / "auto.pt").config
    assert (cpu.model.padding, cpu.model.batch_norm, cpu.train.optimizer) == ("same", True,
                                                                              "adam")
    assert cpu.model.depth == 3 and cpu.train.tile == 64  # flags win over the preset
    (tmp_path / "c.yaml").write_text("train: {optimizer: adam}\n")
    code, out, err = run([*base, "-o", tiffs / "paper.pt", "--preset", "paper", "--config",
                          tmp_path / "c.yaml"], capsys)
    assert code == 0, err
    paper = load_model(tiffs / "paper.pt").config
    assert out.startswith("preset paper:")
    assert (paper.model.padding, paper.model.batch_norm, paper.train.momentum,
            paper.weights.w0) == ("valid", False, 0.99, 10.0)
    assert paper.train.optimizer == "adam"  # the config file wins over the preset
    assert "w0 10, sigma 5, class balance; threshold auto;" in out.splitlines()[0]
    code, out, err = run([*base, "-o", tiffs / "flags.pt", "--threshold", "auto", "--w0", "10",
                          "--balance", "on", "--membrane-weight", "1", "--close-gaps", "off"],
                         capsys)
    assert code == 0, err
    flags = load_model(tiffs / "flags.pt").config
    assert flags.train.threshold is None and flags.weights.balance and flags.weights.w0 == 10
    assert flags.train.close_gaps is None and "threshold auto; augmentation" in out
    with pytest.raises(SystemExit) as exit_:
        run([*base, "-o", tiffs / "x.pt", "--threshold", "half"], capsys)
    assert exit_.value.code == 2 and "'auto', not 'half'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        run([*base, "-o", tiffs / "x.pt", "--preset", "gpu"], capsys)
    assert exit_.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err


def test_train_says_what_it_trains_on_and_counts_the_time_budget(tiffs, capsys):
    code, out, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", tiffs / "m.pt",
                          "--epochs", "1000", "--patience", "100000", "--minutes", "0.05",
                          *TINY], capsys)
    assert code == 0, err
    assert "training on 3 slices (0-2), validating on 3; device cpu" in out
    assert "/3 s [" in err and "/2000" not in err  # counts the budget
    assert "stopped after time budget" in out
    # The validation after the budget, mid-epoch, is the final one, not a repeated epoch.
    validations = [line for line in out.splitlines()
                   if line.startswith(("epoch ", "final validation"))]
    assert validations[-1].startswith("final validation (time budget, step ")
    epochs = [line.split(":")[0] for line in validations[:-1]]
    assert len(epochs) == len(set(epochs)) and all(e.startswith("epoch ") for e in epochs)


@pytest.mark.parametrize("case", ["images", "labels", "init", "config", "link", "hardlink",
                                  "last"])
def test_train_never_writes_over_an_input(tiffs, capsys, model_path, case):
    image, labels, extra = tiffs / "img.tif", tiffs / "isbi.tif", []
    output = {"images": image, "labels": labels, "link": tiffs / "link.tif",
              "hardlink": tiffs / "hard.tif"}.get(case)
    if case == "init":
        extra, output = ["--init", model_path], model_path
    elif case == "last":  # -o x.pt would write its last model over x.last.pt, the init model
        last = tiffs / "x.last.pt"
        last.write_bytes(model_path.read_bytes())
        extra, output = ["--init", last], tiffs / "x.pt"
    elif case == "config":
        output = tiffs / "c.json"
        output.write_text('{"train": {"epochs": 1}}')
        extra = ["--config", output]
    elif case == "link":
        output.symlink_to(image)
    elif case == "hardlink":
        os.link(image, output)
    before = {p.name: p.read_bytes() for p in tiffs.iterdir() if p.is_file()}
    code, _, err = run(["train", image, labels, "-o", output, "--overwrite", *extra, *TINY],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "an input is never replaced, even when overwriting is allowed" in err
    assert {p.name: p.read_bytes() for p in tiffs.iterdir() if p.is_file()} == before


def test_train_keeps_an_earlier_runs_last_model(tiffs, capsys):
    last = tiffs / "m.last.pt"
    last.write_bytes(b"an earlier run")
    code, _, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", tiffs / "m.pt",
                        *TINY], capsys)
    assert code == 2 and f"{last} exists; use --resume" in err
    assert last.read_bytes() == b"an earlier run" and not (tiffs / "m.pt").exists()


def test_tile_is_rounded_with_a_notice(tiffs, capsys):
    code, _, err = run(["train", tiffs / "img.tif", tiffs / "isbi.tif", "-o", tiffs / "m.pt",
                        "--epochs", "1", *TINY, "--tile", "7"], capsys)
    assert code == 0, err
    # depth 3, same padding: output tiles are multiples of 4
    assert "note: tile 7 rounded to 8, a tile side that a depth-3 U-Net with same padding " \
           "can use" in err
    assert load_model(tiffs / "m.pt").config.train.tile == 8
    code, _, err = run(["lr-find", tiffs / "img.tif", tiffs / "isbi.tif", "--steps", "2",
                        *TINY_NET, "--tile", "8"], capsys)
    assert code == 0 and "note:" not in err


def test_small_image_trains_on_mirror_padding_with_a_warning(tmp_path, isbi_small, capsys):
    image, labels = isbi_small
    tifffile.imwrite(tmp_path / "i.tif", image[0, :12, :12], photometric="minisblack")
    tifffile.imwrite(tmp_path / "l.tif", labels[0, :12, :12], photometric="minisblack")
    code, _, err = run(["train", tmp_path / "i.tif", tmp_path / "l.tif", "-o", tmp_path / "m.pt",
                        "--preset", "paper", "--base-channels", "2", "--tile", "4",
                        "--batch-size", "1", "--samples-per-epoch", "1", "--epochs", "1",
                        "--val-slices", "none", "--device", "cpu"], capsys)
    assert code == 0, err
    assert ("warning: slices of 12x12 px are smaller than one network input (188 px for a "
            "depth-5 U-Net with valid padding); training fills its tiles by mirroring the "
            "slice") in err
    assert load_model(tmp_path / "m.pt").config.model.depth == 5


def test_lr_find_help_lists_only_its_own_flags(capsys):
    with pytest.raises(SystemExit):
        main(["lr-find", "--help"])
    text = capsys.readouterr().out
    for flag in ("--epochs", "--minutes", "--patience", "--monitor", "--schedule",
                 "--val-slices", "--samples-per-epoch", "--threshold", "--lr "):
        assert flag not in text, flag
    assert "--tile" in text and "--depth" in text and "--steps" in text
    positionals = text.split("positional arguments:")[1].split("options:")[0].splitlines()
    assert all(len(line.split()) > 1 for line in positionals if line.strip())  # each has help
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--epochs" in capsys.readouterr().out
