import math

import numpy as np
import pytest
import torch

from napari_unet.devices import cpu_threads
from napari_unet.errors import InputError
from napari_unet.evaluation.scores import evaluate
from napari_unet.jobs import drain
from napari_unet.model.files import load_model
from napari_unet.prediction.postprocess import is_membrane
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.training.progress import Event, TrainingError, describe_start, format_slices
from napari_unet.training.train import last_path_for, train
from napari_unet.training.validation import THRESHOLDS, pick_threshold


def events(generator):
    out = []
    result = drain(generator, out.append)
    return out, result


def test_progress_and_files(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    progress, result = events(train(image, labels, tiny_config, output=tmp_path / "m.pt"))
    assert progress[0].event is Event.START
    assert progress[0].metrics == {"train_slices": [0, 1, 2], "val_slices": [3],
                                   "device": "cpu", "threads": cpu_threads()}
    steps = [p for p in progress if p.event is Event.STEP]
    validations = [p for p in progress if p.event is Event.VALIDATION]
    assert [p.step for p in steps] == [1, 2, 3, 4] and steps[-1].total_steps == 4
    assert all(math.isfinite(p.loss) and p.lr == 0.01 and p.samples_per_s > 0 for p in steps)
    assert len(validations) == 2 and validations[-1].preview.shape == (128, 128)
    assert validations[-1].preview_slice == 3
    metrics = validations[0].metrics
    assert {"val_loss", "pixel_error", "v_rand", "v_info", "threshold", "v_rand_max",
            "v_info_max"} <= set(metrics)
    assert metrics["v_rand_max"] >= metrics["v_rand"]
    assert [row[0] for row in metrics["sweep"]] == list(THRESHOLDS)
    chosen = THRESHOLDS.index(metrics["threshold"])
    assert metrics["sweep"][chosen][1:] == [metrics["v_rand"], metrics["v_info"],
                                            metrics["pixel_error"]]
    assert validations[0].metrics["threshold"] in THRESHOLDS
    assert result.reason == "epochs" and len(result.history) == 2
    best, last = load_model(tmp_path / "m.pt"), load_model(last_path_for(tmp_path / "m.pt"))
    assert best.training_state == {} and last.training_state["step"] == 4
    assert last.history == result.history


def test_resume_is_exact(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    config = tiny_config.replace(model={"dropout": 0.2}, train={"epochs": 3,
                                                               "schedule": "cosine"})
    whole = drain(train(image, labels, config, output=tmp_path / "a.pt"))
    first = train(image, labels, config, output=tmp_path / "b.pt")
    for _ in range(3):  # stop in the middle of the second epoch
        next(first)
    first.close()
    rest = drain(train(image, labels, config, output=tmp_path / "b.pt",
                       resume=last_path_for(tmp_path / "b.pt")))
    for key, value in whole.last.state_dict.items():
        assert torch.equal(rest.last.state_dict[key], value), key
    assert [h["val_loss"] for h in rest.history] == [h["val_loss"] for h in whole.history]


def test_early_stopping(isbi_small, tiny_config):
    image, labels = isbi_small
    # A learning rate of ~0 never improves the score: patience 1 stops after 2 validations.
    config = tiny_config.replace(train={"epochs": 10, "lr": 1e-30, "patience": 1,
                                        "monitor": "val_loss"})
    result = drain(train(image, labels, config))
    assert result.reason == "early stopping" and len(result.history) == 3


def test_time_budget_validates_and_saves_the_best(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    config = tiny_config.replace(train={"minutes": 0.0})
    result = drain(train(image, labels, config, output=tmp_path / "m.pt"))
    assert result.reason == "time budget"
    assert result.last.training_state["step"] == 1
    assert result.last.training_state["epoch"] == 0  # mid-epoch: resume continues it
    assert [r["step"] for r in result.history] == [1]
    assert result.best_path.is_file() and result.last_path.is_file()


def test_nan_loss_stops_and_keeps_the_best(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    output = tmp_path / "m.pt"
    drain(train(image, labels, tiny_config, output=output))
    before = output.read_bytes()
    config = tiny_config.replace(train={"lr": 1e12, "epochs": 20})
    with pytest.raises(TrainingError, match=r"loss became (nan|inf) at step \d+"):
        drain(train(image, labels, config, init=output, output=tmp_path / "other.pt"))
    assert output.read_bytes() == before


def test_init_fine_tunes_from_a_model(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    first = drain(train(image, labels, tiny_config, output=tmp_path / "m.pt"))
    other = tiny_config.replace(model={"base_channels": 8}, train={"epochs": 1})
    tuned = drain(train(image, labels, other, init=tmp_path / "m.pt"))
    assert tuned.last.config.model == first.last.config.model  # the model's network is kept
    assert tuned.last.normalization == first.last.normalization


def test_unannotated_labels_refused(isbi_small, tiny_config):
    image, _ = isbi_small
    with pytest.raises(InputError, match="no annotation"):
        drain(train(image, np.zeros_like(image), tiny_config))


def test_resume_needs_training_state(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    drain(train(image, labels, tiny_config, output=tmp_path / "m.pt"))
    with pytest.raises(InputError, match="no training state"):
        drain(train(image, labels, tiny_config, resume=tmp_path / "m.pt"))


def test_worker_processes_give_the_same_samples(isbi_small, tiny_config):
    image, labels = isbi_small
    config = tiny_config.replace(train={"epochs": 1})
    inline = drain(train(image, labels, config))
    spawned = drain(train(image, labels, config.replace(train={"num_workers": 1})))
    for key, value in inline.last.state_dict.items():
        assert torch.equal(spawned.last.state_dict[key], value), key


def test_gradient_accumulation_counts_updates(isbi_small, tiny_config):
    image, labels = isbi_small
    config = tiny_config.replace(train={"epochs": 1, "samples_per_epoch": 8, "batch_size": 1,
                                        "accumulate": 4})
    progress, result = events(train(image, labels, config))
    steps = [p for p in progress if p.event is Event.STEP]
    assert [p.step for p in steps] == [1, 2] and steps[-1].total_steps == 2
    assert result.last.training_state["position"] == 0  # the epoch ended after 8 tiles
    assert result.last.training_state["epoch"] == 1


def test_out_of_gpu_memory_says_what_to_shrink(isbi_small, tiny_config, monkeypatch):
    import napari_unet.training.setup as setup_module

    def out_of_memory(setup, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(setup_module, "loss_of_batch", out_of_memory)
    image, labels = isbi_small
    with pytest.raises(TrainingError, match=r"out of GPU memory at tile \d+ px, batch 2: try a "
                                            r"smaller tile or batch size"):
        drain(train(image, labels, tiny_config))


def test_plateau_schedule_lowers_the_rate(isbi_small, tiny_config):
    image, labels = isbi_small
    # A rate of 1e-7 without momentum barely moves the loss (no 1e-4 relative gain),
    # and its cut by 10 is above the scheduler's eps of 1e-8.
    config = tiny_config.replace(train={"epochs": 6, "lr": 1e-7, "momentum": 0.0,
                                        "schedule": "plateau", "monitor": "val_loss"})
    result = drain(train(image, labels, config))
    assert result.history[-1]["lr"] < result.history[0]["lr"]


def test_exported_threshold_balances_v_rand_and_pixel_error():
    sweep = [{"threshold": 0.3, "v_rand": 0.98, "pixel_error": 0.20},  # thick: best V_rand
             {"threshold": 0.5, "v_rand": 0.97, "pixel_error": 0.12},
             {"threshold": 0.7, "v_rand": 0.90, "pixel_error": 0.08}]  # thin, with gaps
    assert pick_threshold(sweep)["threshold"] == 0.5
    tie = [{"threshold": t, "v_rand": 0.9, "pixel_error": 0.1} for t in (0.2, 0.4, 0.7)]
    assert pick_threshold(tie)["threshold"] == 0.4
    unscored = [{"threshold": 0.5, "v_rand": None, "pixel_error": 0.1},
                {"threshold": 0.6, "v_rand": 0.5, "pixel_error": 0.2}]
    assert pick_threshold(unscored)["threshold"] == 0.6


def test_start_line_names_slices_and_device():
    assert format_slices([3, 0, 1, 2, 7, 9, 10]) == "0-3, 7, 9-10"
    assert format_slices([]) == "none"
    info = {"train_slices": list(range(24)), "val_slices": [24, 25, 26], "device": "cpu",
            "threads": 2}
    assert describe_start(info) == ("training on 24 slices (0-23), validating on 24-26; "
                                    "device cpu (2 threads)")


def test_fine_tuning_without_validation_keeps_the_threshold(isbi_small, tiny_config, tmp_path,
                                                            model_path):
    image, labels = isbi_small
    config = tiny_config.replace(train={"val_slices": (), "epochs": 1})
    result = drain(train(image, labels, config, output=tmp_path / "f.pt", init=model_path))
    assert result.history[-1]["threshold"] == 0.42  # the initial model's (conftest)
    assert load_model(tmp_path / "f.pt").threshold == 0.42
    scratch = drain(train(image, labels, config, output=tmp_path / "s.pt"))
    assert "threshold" not in scratch.history[-1]
    assert load_model(tmp_path / "s.pt").threshold == 0.5


def test_validation_scores_the_mask_with_its_gaps_closed(isbi_small, tiny_config, tmp_path):
    image, labels = isbi_small
    config = tiny_config.replace(train={"threshold": 0.45, "close_gaps": 0.2, "epochs": 1})
    _, result = events(train(image, labels, config, output=tmp_path / "m.pt"))
    record, model_file = result.history[-1], load_model(tmp_path / "m.pt")
    assert (model_file.threshold, model_file.close_gaps) == (0.45, 0.2)
    assert "gaps closed at 0.2" in model_file.describe()
    val = list(config.train.val_slices)
    probs = predict_probabilities(model_file.build_model(),
                                  model_file.normalization.unit(image[val]),
                                  model_file.normalization, tile=config.train.tile)
    closed = evaluate(is_membrane(probs, threshold=0.45, close_gaps=0.2), labels[val])
    assert record["pixel_error"] == pytest.approx(closed["pixel_error"], abs=1e-4)
    # the sweep stays the challenge's, of the probabilities alone
    at = next(row for row in record["sweep"] if row[0] == 0.45)
    assert at[3] == pytest.approx(evaluate(probs, labels[val], threshold=0.45)["pixel_error"],
                                  abs=1e-4)


def test_a_fixed_threshold_is_the_exported_one(isbi_small, tiny_config, tmp_path, model_path):
    image, labels = isbi_small
    config = tiny_config.replace(train={"threshold": 0.45, "epochs": 1})
    _, result = events(train(image, labels, config, output=tmp_path / "m.pt"))
    record = result.history[-1]
    assert record["threshold"] == 0.45 and load_model(tmp_path / "m.pt").threshold == 0.45
    assert [row[0] for row in record["sweep"]] == sorted([*THRESHOLDS, 0.45])
    at = next(row for row in record["sweep"] if row[0] == 0.45)
    assert at[1:] == [record["v_rand"], record["v_info"], record["pixel_error"]]
    # without validation, a fine-tuned model exports at the config's threshold, not its init's
    config = config.replace(train={"val_slices": ()})
    drain(train(image, labels, config, output=tmp_path / "f.pt", init=model_path))
    assert load_model(tmp_path / "f.pt").threshold == 0.45


def test_cosine_schedule_follows_steps_or_the_time_budget():
    from napari_unet.training.setup import cosine_lr, run_progress

    assert cosine_lr(0.1, 0.0) == 0.1 and cosine_lr(0.1, 1.0) == 0.0
    assert cosine_lr(0.1, 0.5) == pytest.approx(0.05) and cosine_lr(0.1, 2.0) == 0.0
    assert run_progress(50, 100, 30.0, None) == 0.5  # no budget: by steps
    assert run_progress(50, 100, 45.0, 1.0) == 0.75  # the budget ends the run first
    assert run_progress(90, 100, 6.0, 1.0) == 0.9
