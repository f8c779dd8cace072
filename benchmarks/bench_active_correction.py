"""Does correcting the least sure slices first pay? Top-ranked vs random vs lowest-ranked.

A model is trained on three ISBI 2012 slices (0-2) with the CPU preset. It
predicts the 18 candidate slices (3-29 but every third), and
`napari_unet.prediction.uncertainty` ranks them.
Then, as a user of Correct-and-retrain would, two slices are "corrected" (given their true
labels) and the model is fine-tuned on them and the three base slices for the same number of
steps (the same minutes on one machine):

- the 2 top-ranked slices (least sure), over ``--seeds`` training seeds;
- 2 random candidates, over ``--draws`` draws (each its own seed);
- the 2 lowest-ranked slices (surest), over the same seeds.

Every model is scored on slices 5, 8, ..., 29, which no run trains on (interleaved with the
candidates, so that no choice is nearer to them than another), with the project's ISBI
metric at the model's own threshold. Also printed: how well each uncertainty measure
ranks the candidates by the base model's error (Spearman correlation of the per-slice
score with 1 - V_rand and with the pixel error, and of the per-region score with the
region's pixel error), and what each measure costs next to the prediction.

Usage::

    python benchmarks/bench_active_correction.py [--base-steps 600] [--steps 200]
        [--lr 0.001] [--seeds 3] [--draws 4] [--keep-base BASE.pt] [--json out.json]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_time_to_quality import test_scores
from scipy.stats import spearmanr

BASE = [0, 1, 2]
TEST = list(range(5, 30, 3))
CANDIDATES = [z for z in range(3, 30) if z not in TEST]
PICK = 2


def steps_config(base, steps: int, seed: int, lr: float | None = None):
    """Return ``base`` trained for exactly ``steps`` steps on a cosine schedule, no validation.

    The cosine schedule ends every run at a learning rate of zero, so the weights scored
    are not a random point of a noisy trajectory.
    """
    batch = base.train.batch_size
    return base.replace(train={"epochs": 1, "samples_per_epoch": steps * batch, "minutes": None,
                               "val_slices": (), "patience": None, "seed": seed,
                               "device": "cpu", "schedule": "cosine",
                               "lr": lr or base.train.lr})


def train_on(image, truth, slices, config, output: Path, init=None) -> float:
    """Train (or fine-tune from ``init``) on ``slices`` of the truth; return the seconds."""
    from napari_unet.jobs import drain
    from napari_unet.training.train import train

    labels = np.zeros_like(truth)
    labels[slices] = truth[slices]
    start = time.perf_counter()
    drain(train(image, labels, config, output=output, init=init))
    return time.perf_counter() - start


def predict_with(path: Path, image, **options):
    """Return the probabilities (and with ``spread`` the TTA spread) of a model file; seconds."""
    from napari_unet.model.files import load_model
    from napari_unet.prediction.predict import predict_probabilities

    model_file = load_model(path)
    start = time.perf_counter()
    out = predict_probabilities(model_file.build_model(), model_file.normalization.unit(image),
                                model_file.normalization, tile=model_file.config.train.tile,
                                **options)
    return model_file, out, time.perf_counter() - start


def score(path: Path, image, truth) -> dict:
    model_file, probs, _ = predict_with(path, image)
    result = test_scores(probs, truth, model_file.threshold, model_file.close_gaps)
    return {k: result[k] for k in ("v_rand", "v_info", "pixel_error", "v_rand_max")}


def slice_errors(probs, truth, threshold, close_gaps) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice 1 - V_rand and pixel error of the exported mask."""
    from napari_unet.evaluation.scores import evaluate
    from napari_unet.prediction.postprocess import is_membrane

    per = evaluate(is_membrane(probs, threshold=threshold, close_gaps=close_gaps),
                   truth)["per_slice"]
    return (np.array([1 - s["v_rand"] for s in per]), np.array([s["pixel_error"] for s in per]))


def region_errors(probs, truth, threshold, close_gaps, region: int) -> np.ndarray:
    """Per-region pixel error of the exported mask, (Z, R, C)."""
    from napari_unet.prediction.postprocess import is_membrane
    from napari_unet.prediction.uncertainty import region_means

    wrong = is_membrane(probs, threshold=threshold, close_gaps=close_gaps) != (truth == 1)
    return np.stack([region_means(plane, region) for plane in wrong])


def measures(model_file, probs, spread, tta_probs) -> dict[str, tuple[np.ndarray, float]]:
    """Each uncertainty measure's map and the seconds it took (from the probabilities)."""
    from napari_unet.prediction.uncertainty import (
        crest_weight,
        disagreement,
        margin,
        uncertainty_map,
    )

    t = model_file.threshold
    timed = {
        "margin": lambda: margin(probs, t),
        "margin x crest": lambda: margin(probs, t) * crest_weight(probs),
        "margin x crest, far (default)": lambda: uncertainty_map(probs, threshold=t),
        "TTA disagreement": lambda: disagreement(spread),
        "TTA disagreement x crest": lambda: disagreement(spread) * crest_weight(tta_probs),
        "TTA disagr. x crest, far": lambda: uncertainty_map(tta_probs, threshold=t,
                                                            spread=spread),
        "TTA margin x crest": lambda: margin(tta_probs, t) * crest_weight(tta_probs),
    }
    out = {}
    for name, make in timed.items():
        start = time.perf_counter()
        out[name] = (make(), time.perf_counter() - start)
    return out


def ranking_table(model_file, probs, spread, tta_probs, truth) -> tuple[list[dict], dict]:
    """Spearman correlations of each measure with the base model's errors."""
    from napari_unet.prediction.uncertainty import REGION, rank

    t, gaps = model_file.threshold, model_file.close_gaps
    errors = {False: slice_errors(probs, truth, t, gaps),
              True: slice_errors(tta_probs, truth, t, gaps)}
    regions = {False: region_errors(probs, truth, t, gaps, REGION),
               True: region_errors(tta_probs, truth, t, gaps, REGION)}
    rows, rankings = [], {}
    for name, (umap, seconds) in measures(model_file, probs, spread, tta_probs).items():
        tta = name.startswith("TTA")
        ranking = rank(umap)
        rankings[name] = ranking
        rand_err, pix_err = errors[tta]
        rows.append({"measure": name, "seconds": seconds,
                     "rho_vrand": spearmanr(ranking.slices, rand_err).statistic,
                     "rho_pixel": spearmanr(ranking.slices, pix_err).statistic,
                     "rho_region": spearmanr(ranking.regions.ravel(),
                                             regions[tta].ravel()).statistic})
    return rows, rankings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps (equal)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--keep-base", type=Path, help="reuse (or keep) the base model here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from napari_unet.config import config_for_preset
    from napari_unet.io.sample import isbi2012

    image, truth = isbi2012()
    preset = config_for_preset("cpu", device="cpu")
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = args.keep_base or tmp / "base.pt"
        if not base.is_file():
            seconds = train_on(image, truth, BASE, steps_config(preset, args.base_steps, 0),
                               base)
            print(f"base model: {args.base_steps} steps on slices {BASE} in {seconds:.0f} s",
                  flush=True)
        results["base"] = score(base, image[TEST], truth[TEST])
        print(f"base model on the test slices: {results['base']}", flush=True)
        model_file, probs, t_plain = predict_with(base, image[CANDIDATES])
        _, (tta_probs, spread), t_tta = predict_with(base, image[CANDIDATES], tta=True,
                                                     spread=True)
        rows, rankings = ranking_table(model_file, probs, spread, tta_probs, truth[CANDIDATES])
        results["prediction_seconds"] = {"plain": t_plain, "tta": t_tta}
        results["measures"] = rows
        print(f"\nRanking the {len(CANDIDATES)} candidates (slices {CANDIDATES}) by the base "
              f"model's error; prediction took {t_plain:.1f} s, {t_tta:.1f} s with TTA.")
        print(f"{'measure':<28}{'rho(1-V_rand)':>15}{'rho(pixel err)':>16}"
              f"{'rho(region)':>13}{'seconds':>9}")
        for row in rows:
            print(f"{row['measure']:<28}{row['rho_vrand']:>15.3f}{row['rho_pixel']:>16.3f}"
                  f"{row['rho_region']:>13.3f}{row['seconds']:>9.2f}")

        order = [CANDIDATES[i] for i in rankings["margin x crest, far (default)"].order()]
        results["order"] = order
        print(f"\nranked (least sure first): {order}", flush=True)
        rng = np.random.default_rng(0)
        runs = [("top-ranked", order[:PICK], seed) for seed in range(args.seeds)]
        runs += [("random", sorted(int(z) for z in rng.choice(CANDIDATES, PICK, replace=False)),
                  100 + d) for d in range(args.draws)]
        runs += [("lowest-ranked", order[-PICK:], seed) for seed in range(args.seeds)]
        results["runs"] = []
        for n, (choice, slices, seed) in enumerate(runs):
            out = tmp / f"run{n}.pt"
            seconds = train_on(image, truth, BASE + list(slices),
                               steps_config(model_file.config, args.steps, seed, args.lr), out,
                               init=base)
            row = {"choice": choice, "slices": list(slices), "seed": seed, "seconds": seconds,
                   **score(out, image[TEST], truth[TEST])}
            results["runs"].append(row)
            print(f"{choice:<14} slices {row['slices']!s:<10} seed {seed:<4} "
                  f"V_rand {row['v_rand']:.4f}  V_info {row['v_info']:.4f}  "
                  f"pixel error {row['pixel_error']:.4f}  best V_rand {row['v_rand_max']:.4f}  "
                  f"({seconds:.0f} s)", flush=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


def report(results: dict) -> None:
    base = results["base"]
    print(f"\nScored on slices {TEST} (never trained on); mean ± sd over runs.")
    keys = ("v_rand", "v_info", "pixel_error", "v_rand_max")
    print(f"{'choice':<18}{'runs':>5}{'V_rand':>18}{'V_info':>18}{'pixel error':>18}"
          f"{'best V_rand':>18}")
    print(f"{'base (no retrain)':<18}{1:>5}" + "".join(f"{base[k]:>18.4f}" for k in keys))
    for choice in ("top-ranked", "random", "lowest-ranked"):
        rows = [r for r in results["runs"] if r["choice"] == choice]
        cells = "".join(f"{np.mean([r[k] for r in rows]):>11.4f} ± "
                        f"{np.std([r[k] for r in rows]):.3f}" for k in keys)
        print(f"{choice:<18}{len(rows):>5}{cells}")


if __name__ == "__main__":
    sys.exit(main())
