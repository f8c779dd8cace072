"""Time to a good mask: the project's default CPU training against a plain U-Net, same minutes.

Both train on ISBI 2012 slices 0-23 of the bundled sample, follow their validation V_rand on
slices 24-26 while they train, and are scored at the end on slices 27-29, which neither ever
trains on, with the project's ISBI metric (`evaluation.scores`): V_rand, V_info and pixel
error of the exported mask (each cut as it would export it: threshold, gaps closed), and the
challenge's maximum over thresholds. The membrane fraction of each mask is printed next to
the truth's, since a thick mask can score a high V_rand and still look wrong.

The reference is written here, not with the project's training code: a same-padding U-Net
(width 16, 4 poolings, batch norm), Adam 1e-3, 4 random 192x192 crops a step with flips and
90-degree rotations, cross-entropy with membrane weight 2, whole-slice prediction cut at 0.5.

Each run is a subprocess with one thread, pinned to its own core (`taskset`), both at once,
or one after the other on core 0 with ``--sequential``. Usage::

    python benchmarks/bench_time_to_quality.py --minutes 15 [--preset auto] [--sequential]
        [--plot docs/images/time-to-quality.png] [--json results.json] [--set train.lr=0.002]
        [--only project|reference] [--core N] [--keep MODEL.pt]

``--set SECTION.FIELD=VALUE`` changes one setting of the project's run (repeatable), which
is how the ablation in docs/training.md is run.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TRAIN = list(range(24))
VAL = [24, 25, 26]
TEST = [27, 28, 29]
CURVE_EVERY_S = 60.0


# --------------------------------------------------------------------- the plain reference


def reference_unet(width: int = 16, depth: int = 5):
    """Return a plain same-padding U-Net with batch norm (torch only)."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [width * 2**i for i in range(depth)]
            self.down = nn.ModuleList([block(1, chans[0])] + [
                block(chans[i - 1], chans[i]) for i in range(1, depth)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(chans[i], chans[i - 1], 2, stride=2)
                                     for i in range(depth - 1, 0, -1)])
            self.merge = nn.ModuleList([block(2 * chans[i - 1], chans[i - 1])
                                        for i in range(depth - 1, 0, -1)])
            self.head = nn.Conv2d(chans[0], 2, 1)

        def forward(self, x):
            skips = []
            for i, layer in enumerate(self.down):
                x = layer(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
                x = merge(torch.cat([skip, up(x)], dim=1))
            return self.head(x)

    return Plain()


def reference_probabilities(model, image: np.ndarray) -> np.ndarray:
    """P(membrane) of whole (Z, 512, 512) standardised slices."""
    import torch

    model.eval()
    with torch.no_grad():
        out = [torch.softmax(model(torch.from_numpy(s[None, None])), 1)[0, 1].numpy()
               for s in image]
    model.train()
    return np.stack(out)


def run_reference(minutes: float, seed: int) -> dict:
    """Train the plain U-Net for ``minutes``; return its curve and its model's test scores."""
    import torch

    from napari_unet.evaluation.scores import evaluate
    from napari_unet.io.sample import isbi2012

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    image, labels = isbi2012()
    image = ((image - image.mean()) / image.std()).astype(np.float32)
    membrane = (labels == 1).astype(np.int64)
    model = reference_unet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]))
    start, curve, next_curve, steps = time.monotonic(), [], CURVE_EVERY_S, 0
    while time.monotonic() - start < 60 * minutes:
        crops, targets = [], []
        for _ in range(4):
            z, y, x = rng.choice(TRAIN), *rng.integers(0, 512 - 192, size=2)
            k, flip = rng.integers(4), rng.integers(2)
            im, lb = image[z, y:y + 192, x:x + 192], membrane[z, y:y + 192, x:x + 192]
            im, lb = np.rot90(im, k), np.rot90(lb, k)
            if flip:
                im, lb = im[:, ::-1], lb[:, ::-1]
            crops.append(im.copy())
            targets.append(lb.copy())
        logits = model(torch.from_numpy(np.stack(crops)[:, None]))
        loss = loss_fn(logits, torch.from_numpy(np.stack(targets)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
        if time.monotonic() - start >= next_curve:
            scores = evaluate(reference_probabilities(model, image[VAL]), labels[VAL])
            curve.append({"minutes": (time.monotonic() - start) / 60, "v_rand": scores["v_rand"]})
            next_curve += CURVE_EVERY_S
    probs = reference_probabilities(model, image[TEST])
    return {"name": "plain U-Net", "steps": steps, "threshold": 0.5, "curve": curve,
            **test_scores(probs, labels[TEST], 0.5)}


# --------------------------------------------------------------------- the project


def run_project(minutes: float, seed: int, preset: str, settings: dict,
                keep: Path | None = None) -> dict:
    """Train with the project's engine and preset; return its curve and test scores."""
    import torch

    from napari_unet.config import config_for_preset
    from napari_unet.io.sample import isbi2012
    from napari_unet.jobs import drain
    from napari_unet.model.files import load_model
    from napari_unet.prediction.predict import predict_probabilities
    from napari_unet.training.train import train

    image, labels = isbi2012()
    config = config_for_preset(preset, device="cpu").replace(
        train={"val_slices": tuple(VAL), "minutes": minutes, "seed": seed, "device": "cpu"})
    config = config.replace(**settings)
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "model.pt"
        result = drain(train(image[:27], labels[:27], config, output=output))
        best = load_model(output)
        if keep:
            shutil.copy(output, keep)
    model = best.build_model()
    unit = best.normalization.unit(image[TEST])
    probs = predict_probabilities(model, unit, best.normalization, tile=config.train.tile,
                                  device=torch.device("cpu"))
    curve = [{"minutes": r["seconds"] / 60, "v_rand": r.get("v_rand")} for r in result.history]
    return {"name": f"napari-unet ({preset})", "steps": result.history[-1]["step"],
            "threshold": best.threshold, "close_gaps": best.close_gaps, "curve": curve,
            "config": config.to_dict(),
            **test_scores(probs, labels[TEST], best.threshold, best.close_gaps)}


def test_scores(probs: np.ndarray, truth: np.ndarray, threshold: float,
                close_gaps: float | None = None) -> dict:
    """Return the exported mask's scores, the challenge's maxima and the membrane fractions."""
    from napari_unet.evaluation.scores import evaluate, evaluate_thresholds
    from napari_unet.prediction.postprocess import is_membrane

    mask = is_membrane(probs, threshold=threshold, close_gaps=close_gaps)
    exported = evaluate(mask, truth)
    challenge = evaluate_thresholds(probs, truth)  # 0.0, 0.1, ..., 1.0
    return {
        "sweep": [{"threshold": s["threshold"],
                   **{k: s[k] for k in ("v_rand", "v_info", "pixel_error")},
                   "membrane_fraction": float((probs > s["threshold"]).mean())}
                  for s in challenge["per_threshold"]],
        "v_rand": exported["v_rand"], "v_info": exported["v_info"],
        "pixel_error": exported["pixel_error"],
        "v_rand_max": challenge["v_rand_max"],
        "v_info_max": challenge["v_info_max"],
        "membrane_fraction": float(mask.mean()),
        "true_membrane_fraction": float((truth == 1).mean()),
    }


# --------------------------------------------------------------------- driver


def parse_settings(items: list[str]) -> dict:
    """Parse ``['train.lr=0.002']`` into ``{'train': {'lr': 0.002}}`` (values as JSON)."""
    settings: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        settings.setdefault(section, {})[name] = parsed
    return settings


def launch(kind: str, core: int | None, args, out: Path) -> subprocess.Popen:
    command = [sys.executable, __file__, "--worker", kind, "--minutes", str(args.minutes),
               "--seed", str(args.seed), "--preset", args.preset, "--worker-out", str(out)]
    for item in args.set:
        command += ["--set", item]
    if args.keep and kind == "project":
        command += ["--keep", str(args.keep)]
    if core is not None and hasattr(os, "sched_setaffinity"):
        command = ["taskset", "-c", str(core), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env)


def plot(results: list[dict], path: Path, minutes: float) -> None:
    """Draw validation V_rand against minutes: one colour per method, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["name"].split(", seed")[0] for r in results))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.8), dpi=120,
                             sharey=True, squeeze=False)
    for ax, method, colour in zip(axes[0], methods, ("tab:blue", "tab:orange", "tab:green"),
                                  strict=False):
        runs = [r for r in results if r["name"].split(", seed")[0] == method]
        for r in runs:
            points = [(c["minutes"], c["v_rand"]) for c in r["curve"] if c["v_rand"] is not None]
            if points:
                ax.plot(*zip(*points, strict=True), color=colour, alpha=0.45, linewidth=1)
        tests = [r["v_rand"] for r in runs]
        ax.plot([minutes] * len(tests), tests, marker="*", markersize=11, color=colour,
                linestyle="none", label="test (27-29): " + ", ".join(f"{v:.3f}" for v in tests))
        ax.set_title(f"{method}: {len(runs)} run{'s' if len(runs) > 1 else ''}", fontsize=9)
        ax.set_xlabel("training minutes (one CPU core)")
        ax.set_ylim(0.5, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("V_rand on validation slices 24-26")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    parser.add_argument("--sequential", action="store_true",
                        help="one run after the other on core 0 instead of both at once")
    parser.add_argument("--only", choices=["project", "reference"],
                        help="run one side alone (for the ablation)")
    parser.add_argument("--core", type=int, default=0, help="first core to pin to (0)")
    parser.add_argument("--keep", type=Path, help="copy the project's best model there")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="print and plot the results saved by --json, training nothing")
    parser.add_argument("--worker", choices=["project", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        result = (run_reference(args.minutes, args.seed) if args.worker == "reference" else
                  run_project(args.minutes, args.seed, args.preset, parse_settings(args.set),
                              args.keep))
        args.worker_out.write_text(json.dumps(result))
        return 0
    if args.replot:
        return report(json.loads(args.replot.read_text()), args)
    if args.keep and args.keep.exists():
        parser.error(f"--keep: {args.keep} exists; nothing is replaced")
    kinds = [args.only] if args.only else ["project", "reference"]
    with tempfile.TemporaryDirectory() as tmp:
        outs = {k: Path(tmp) / f"{k}.json" for k in kinds}
        if args.sequential:
            for kind in kinds:
                launch(kind, args.core, args, outs[kind]).wait()
        else:
            procs = [launch(kind, args.core + i, args, outs[kind])
                     for i, kind in enumerate(kinds)]
            for p in procs:
                p.wait()
        results = [json.loads(outs[k].read_text()) for k in kinds if outs[k].exists()]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return report(results, args)


def report(results: list[dict], args) -> int:
    """Print the results side by side and draw the plot."""
    print(f"\n{args.minutes:g} minutes each, one core each, "
          f"{'one after the other' if args.sequential else 'at the same time'}; "
          "scored on ISBI slices 27-29 (never trained on)")
    keys = ("v_rand", "v_info", "pixel_error", "v_rand_max", "v_info_max", "membrane_fraction",
            "threshold", "steps")
    print(f"{'':<28}" + "".join(f"{k:>18}" for k in keys))
    for r in results:
        print(f"{r['name']:<28}" + "".join(f"{r[k]:>18.4f}" if isinstance(r[k], float) else
                                           f"{r[k]:>18}" for k in keys))
    if results:
        print(f"{'truth':<28}{'':>90}{results[0]['true_membrane_fraction']:>18.4f}")
    if len(results) == 2:
        ratio = results[0]["v_rand"] / results[1]["v_rand"]
        print(f"V_rand ratio project / reference: {ratio:.3f}")
    if args.plot and results:
        plot(results, args.plot, args.minutes)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
