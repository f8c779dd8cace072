import json

import numpy as np
import tifffile

from napari_unet.cli.main import main
from napari_unet.io.stacks import write_mask


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_prints_compact_json_or_a_table(tiffs, capsys):
    labels = tifffile.imread(tiffs / "isbi.tif")
    write_mask(tiffs / "mask.tif", np.where(labels == 0, 1, 2))
    code, out, _ = run(["evaluate", tiffs / "mask.tif", tiffs / "isbi.tif", "--per-slice"],
                       capsys)
    scores = json.loads(out)
    assert code == 0 and scores["slices"] == [0, 1, 2, 3]
    assert '  "slices": [0, 1, 2, 3],' in out.splitlines()
    assert len(out.splitlines()) == len(scores) + 2 + len(scores["per_slice"]) + 1
    code, out, _ = run(["evaluate", tiffs / "mask.tif", tiffs / "isbi.tif", "--per-slice",
                        "--format", "table"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["pixel_error", "0.0000"]
    assert ["slices", "0-3"] in [line.split() for line in lines]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["slice",
                                                                           "pixel_error"])
    assert [line.split()[:3] for line in lines[header + 1:]] == [
        [str(z), "0.0000", "1.0000"] for z in range(4)]


def test_evaluate_probabilities_adds_the_challenges_maximum(tiffs, capsys, isbi_small):
    _, labels = isbi_small
    # P(membrane) that is right above 0.6 only: the best threshold is 0.6 or above
    probs = np.where(labels == 1, 0.8, 0.55).astype(np.float32)
    tifffile.imwrite(tiffs / "p.tif", probs, photometric="minisblack")
    code, out, _ = run(["evaluate", tiffs / "p.tif", tiffs / "isbi.tif"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["pixel_error"] > 0.5  # at the default 0.5 all is membrane
    assert scores["v_rand_max"] == 1.0 and 0.6 <= scores["v_rand_threshold"] < 0.8
    code, out, _ = run(["evaluate", tiffs / "isbi.tif", tiffs / "isbi.tif"], capsys)
    assert code == 0 and "v_rand_max" not in json.loads(out)  # labels: no threshold to sweep
