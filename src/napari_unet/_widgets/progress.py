"""Progress in words and a smoothed loss, for the Training widget."""

from napari_unet.jobs import Smoother, format_duration
from napari_unet.training.progress import Progress, describe_start

__all__ = ["Smoother", "describe_start", "describe_step", "describe_validation",
           "format_duration"]


def describe_step(p: Progress) -> str:
    """Describe a training step in one line: epoch, step, speed and time left."""
    return (f"epoch {min(p.epoch + 1, p.epochs)}/{p.epochs} · step {p.step}/{p.total_steps} · "
            f"{p.samples_per_s:.1f} tiles/s · {format_duration(p.eta_s)} left")


def describe_validation(metrics: dict, *, final: bool = False) -> str:
    """Describe a validation record in one line: its loss and V_rand.

    ``final``: the validation that closes a time budget, mid-epoch; its record
    repeats the epoch count of the last whole epoch, so it is labelled as the
    command line labels it (``final validation (time budget, step S)``).
    """
    names = {"val_loss": "val loss", "v_rand": "V_rand", "train_loss": "train loss"}
    shown = ", ".join([f"{name} {metrics[key]:.3f}" for key, name in names.items()
                       if metrics.get(key) is not None][:2])
    if final:
        return f"final validation (time budget, step {metrics['step']}): {shown}"
    return f"epoch {metrics['epoch']}: {shown}"
