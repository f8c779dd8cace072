"""The command line's ``evaluate`` job: ISBI 2012 scores of a mask against labels."""

import argparse
import json

import numpy as np

from napari_unet.errors import InputError


def run_evaluate(args: argparse.Namespace) -> int:
    """``napari-unet evaluate``: print ISBI 2012 scores of a mask against labels as JSON.

    For probabilities, the scores at ``--threshold`` (the mask that threshold
    exports) and the challenge's maxima over the thresholds 0.0, 0.1, ..., 1.0.
    """
    from napari_unet.evaluation.scores import evaluate, evaluate_thresholds
    from napari_unet.io.stacks import read_labels, read_tiff

    prediction = read_tiff(args.mask)
    if not np.issubdtype(prediction.dtype, np.floating):
        prediction = read_labels(args.mask)
    elif prediction.size and not (prediction.min() >= 0 and prediction.max() <= 1):
        raise InputError(f"{args.mask}: float values must be probabilities in [0, 1]")
    truth = read_labels(args.labels)
    scores = evaluate(prediction, truth, threshold=args.threshold)
    if np.issubdtype(prediction.dtype, np.floating):
        sweep = evaluate_thresholds(prediction, truth)
        scores.update({key: sweep[key] for key in ("v_rand_max", "v_rand_threshold",
                                                   "v_info_max", "v_info_threshold")})
    if not args.per_slice:
        scores.pop("per_slice", None)
    print(scores_table(scores) if args.format == "table" else scores_json(scores))
    return 0


def scores_json(scores: dict) -> str:
    """JSON with one score per line, lists on one line and one line per slice's scores."""
    def value(item) -> str:
        if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
            return "[\n" + ",\n".join(f"    {json.dumps(v)}" for v in item) + "\n  ]"
        return json.dumps(item)

    lines = [f"  {json.dumps(key)}: {value(item)}" for key, item in scores.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def scores_table(scores: dict) -> str:
    """Lay the scores out as text: one score per row, then one row per slice."""
    from napari_unet.training.progress import format_slices

    def cell(item) -> str:
        return f"{item:.4f}" if isinstance(item, float) else str(item)

    summary = {key: cell(item) for key, item in scores.items() if key != "per_slice"}
    if "slices" in summary:
        summary["slices"] = format_slices(scores["slices"])
    width = max(map(len, summary), default=0)
    lines = [f"{key:<{width}}  {text:>8}" for key, text in summary.items()]
    rows = scores.get("per_slice") or []
    if rows:
        columns = list(rows[0])
        widths = [max(len(name), 6) for name in columns]
        lines.append("")
        lines.append("  ".join(f"{name:>{w}}" for name, w in zip(columns, widths, strict=True)))
        lines += ["  ".join(f"{cell(row[name]):>{w}}" for name, w in zip(columns, widths,
                                                                           strict=True))
                  for row in rows]
    return "\n".join(lines)


def add_evaluate(jobs) -> None:
    """Register the evaluate subcommand."""
    ev = jobs.add_parser(
        "evaluate", help="score a mask against labels (pixel error, V_rand, V_info)",
        description="Score a predicted mask (or probabilities) against labels as the ISBI "
        "2012 challenge does and print JSON (or a table). For probabilities it adds the "
        "challenge's best V_rand and V_info over the thresholds 0, 0.1, ..., 1 and where they "
        "were reached.",
    )
    ev.add_argument("mask", help="mask TIFF (exported by napari-unet, or 0/1/2 labels) or "
                    "float probabilities")
    ev.add_argument("labels", help="ground-truth labels TIFF (either convention)")
    ev.add_argument("--threshold", type=float, default=0.5, help="for probabilities (0.5)")
    ev.add_argument("--per-slice", action="store_true", help="include every slice's scores")
    ev.add_argument("--format", choices=("json", "table"), default="json",
                    help="json (default; lists on one line, one line per slice) or table")
    ev.set_defaults(run=run_evaluate)
