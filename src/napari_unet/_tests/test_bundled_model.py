"""The bundled ISBI 2012 model: it loads by name, safely, and segments the sample well."""

import numpy as np
import pytest
import tifffile

from napari_unet.cli.main import main
from napari_unet.errors import InputError
from napari_unet.evaluation.scores import evaluate
from napari_unet.io.sample import isbi2012
from napari_unet.model.files import BUNDLED, is_bundled, load_model, model_path
from napari_unet.prediction.predict import predict_probabilities

HELD_OUT = [5, 15, 25]
"""Slices the bundled model validated on and never trained on (docs/models.md)."""


def test_the_name_stands_for_the_file_anywhere_a_model_is_read():
    assert model_path("isbi2012") == BUNDLED["isbi2012"] and is_bundled(BUNDLED["isbi2012"])
    assert model_path("my.pt").name == "my.pt" and not is_bundled("my.pt")
    assert BUNDLED["isbi2012"].stat().st_size <= 15 * 2**20
    model_file = load_model("isbi2012")  # torch.load(weights_only=True) inside
    assert model_file.training_state == {}  # weights for prediction, no optimizer state
    assert model_file.config.train.val_slices == tuple(HELD_OUT)  # never trained on them
    with pytest.raises(InputError, match="bundled model: isbi2012"):
        load_model("isbi2013")


@pytest.mark.slow
def test_segments_slices_it_never_trained_on():
    model_file = load_model("isbi2012")
    image, labels = isbi2012()
    probs = predict_probabilities(model_file.build_model(),
                                  model_file.normalization.unit(image[HELD_OUT]),
                                  model_file.normalization, tile=model_file.config.train.tile)
    scores = evaluate(probs, labels[HELD_OUT], threshold=model_file.threshold)
    assert scores["v_rand"] >= 0.95, scores
    assert scores["pixel_error"] <= 0.10, scores
    # not thick: the mask's membrane fraction stays near the labels' (0.22)
    assert (probs > model_file.threshold).mean() <= 0.27


def test_predict_command_takes_the_name(tmp_path, isbi_small, capsys):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, isbi_small[0][:1, :96, :96], photometric="minisblack")
    code = main(["predict", "isbi2012", str(path), "-o", str(tmp_path / "mask.tif"),
                 "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    mask = tifffile.imread(tmp_path / "mask.tif")
    assert mask.shape == (1, 96, 96) and set(np.unique(mask)) <= {0, 255}
