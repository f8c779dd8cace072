"""How long napari's event loop stalls while the Training widget trains on the CPU.

Opens a real viewer with the bundled ISBI 2012 sample, docks the Training
widget, and runs a 10 ms Qt timer throughout: each tick records its lateness
(the gap since the previous tick, less 10 ms) with `time.perf_counter`. While
the loop stalls, napari can neither repaint nor answer the user. The phases,
in one process:

- idle: no training;
- idle + slider: the dims slider moves every 100 ms (the cost of redrawing alone);
- training: from the Start click (setup, steps, validations, preview updates);
- training + slider: the same while the slider moves.

An epoch is ``--epoch-tiles`` tiles, so that validations and the live preview
fall inside the measurement. Printed: median, p95, p99 and max lateness (ms)
per phase; per phase, the largest stall at the start of training (from the
click to just after the first step), at validations (from the last step before
each to just after its record is shown) and otherwise, the idle phases being the
baseline; the largest stalls while training and the records handled in them, the
training steps done, steps/s, the torch threads used and the busy threads.

Usage::

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/bench_responsiveness.py \
        [--seconds 60] [--idle 5] [--base-channels 16] [--tile 196] [--batch-size 2] [--threads N]

Under Xvfb, OpenGL is software (llvmpipe) and competes for the same cores as
training; other processes' CPU use shows up as stalls too, so run it more than once.
"""

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
import torch
from napari.layers import Layer
from qtpy.QtCore import QEventLoop, Qt, QTimer

import napari_unet.devices
from napari_unet._sample_data import isbi2012_sample
from napari_unet._widgets.training import TrainingWidget

TICK_MS = 10
SLIDER_MS = 100


class StallMeter:
    """A Qt timer that records how late each of its ticks comes, per phase."""

    def __init__(self):
        self.phase = None
        self.ticks: dict[str, list[tuple[float, float]]] = {}  # (time, lateness ms)
        self._last = None
        self._timer = QTimer(interval=TICK_MS, timerType=Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.phase is not None and self._last is not None:
            late = max(0.0, 1000 * (now - self._last) - TICK_MS)
            self.ticks.setdefault(self.phase, []).append((self._last, late))
        self._last = now

    def measure(self, phase: str | None) -> None:
        """Record the following ticks under ``phase`` (None: record nothing)."""
        self.phase = phase


class Slider:
    """Moves the viewer's first dims slider back and forth every 100 ms, like a user."""

    def __init__(self, viewer):
        self._dims = viewer.dims
        self._timer = QTimer(interval=SLIDER_MS)
        self._timer.timeout.connect(self._move)
        self._direction = 1

    def _move(self) -> None:
        step = self._dims.current_step[0] + self._direction
        if not 0 <= step < self._dims.nsteps[0]:
            self._direction = -self._direction
            step += 2 * self._direction
        self._dims.set_current_step(0, step)

    def run(self, on: bool) -> None:
        """Start or stop moving."""
        self._timer.start() if on else self._timer.stop()


class Records:
    """Count the training records the widget receives and note when they come."""

    def __init__(self, worker):
        self.steps, self.validations = 0, 0
        self.step_times: list[float] = []
        self.events: list[tuple[float, str]] = []
        worker.yielded.connect(self._on_record)

    def _on_record(self, p) -> None:
        now = time.perf_counter()
        if p.event.value == "step":
            self.steps += 1
            self.step_times.append(now)
            if self.steps == 1:
                self.events.append((now, "first step"))
        elif p.event.value == "validation":
            self.validations += 1
            self.events.append((now, f"validation {self.validations}"))

    def windows(self, start: float, after: float = 0.3) -> dict[str, list[tuple[float, float]]]:
        """Return the moments to watch, as (from, to) perf_counter times.

        "start": from the Start click to ``after`` seconds past the first step's record;
        "validation": from the last step's record before each validation's record (when
        the validation began) to ``after`` seconds past it (the preview and plot updates).
        """
        first = self.step_times[0] + after if self.step_times else math.inf
        spans = {"start": [(start, first)], "validation": []}
        for t, name in self.events:
            if name.startswith("validation"):
                began = max((s for s in self.step_times if s < t), default=start)
                spans["validation"].append((began, t + after))
        return spans

    def rate(self) -> float:
        """Return the steps per second between the first and the last step."""
        t = self.step_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


def run_events(seconds: float, until=None) -> None:
    """Run the Qt event loop for ``seconds`` (or until ``until()`` holds, checked every 50 ms)."""
    loop = QEventLoop()
    QTimer.singleShot(int(1000 * seconds), loop.quit)
    if until is not None:
        check = QTimer(interval=50)
        check.timeout.connect(lambda: until() and loop.quit())
        check.start()
    loop.exec()


def summary(values: list[float]) -> str:
    """Format median, p95, p99 and max of milliseconds, and their count, as a table row."""
    if not values:
        return "  (no ticks)"
    q = np.percentile(values, [50, 95, 99, 100])
    return "".join(f"{v:9.1f}" for v in q) + f"{len(values):8d}"


def make_viewer() -> tuple[napari.Viewer, TrainingWidget]:
    """Open a shown viewer with the ISBI sample and the Training widget docked."""
    viewer = napari.Viewer(show=True)
    for data, meta, kind in isbi2012_sample():
        viewer.add_layer(Layer.create(data, meta, kind))
    widget = TrainingWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Training")
    return viewer, widget


def configure(widget: TrainingWidget, args, output: Path) -> None:
    """Fill the form as a user would; epochs are short so that validations come often."""
    form = widget.form
    settings = {"depth": args.depth, "base_channels": args.base_channels, "tile": args.tile,
                "batch_size": args.batch_size, "epochs": 1000, "val_slices": args.val_slices,
                "device": "cpu", "lr": "0.005"}
    for name, value in settings.items():
        getattr(form, name).value = value
    form.output.value = output
    # The form has no field for the epoch length, and it takes only the weight map and
    # augmentation from a base config: the epoch length is set on the form's result.
    plain = form.config

    def config(base=None):
        return plain(base=base).replace(train={"samples_per_epoch": args.epoch_tiles})

    form.config = config


def thread_cpu() -> dict[str, float]:
    """Return the CPU seconds used so far by each thread of this process ("id name": s)."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        usage[f"{task.name} {name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return usage


def busy_threads(before: dict, after: dict, seconds: float) -> str:
    """Name the threads that used over 5% of a core between two `thread_cpu` snapshots."""
    shares = {k: (v - before.get(k, 0.0)) / seconds for k, v in after.items()}
    busy = sorted((share, k) for k, share in shares.items() if share > 0.05)
    return ", ".join(f"{k} {100 * share:.0f}%" for share, k in reversed(busy))


def stalls_by_moment(ticks, windows: dict) -> str:
    """Format the largest lateness (ms) of the ticks in each kind of window, and elsewhere."""
    largest = dict.fromkeys([*windows, "otherwise"], 0.0)
    for t, late in ticks:
        end = t + (late + TICK_MS) / 1000
        kinds = [k for k, spans in windows.items() if any(a <= end and t <= z for a, z in spans)]
        for kind in kinds or ["otherwise"]:
            largest[kind] = max(largest[kind], late)
    return "".join(f"{v:16.1f}" for v in largest.values())


def largest_stalls(ticks, events, start: float, count: int = 5) -> list[str]:
    """Describe the largest stalls: when (s after Start) and the records handled during them."""
    lines = []
    for t, late in sorted(ticks, key=lambda tick: -tick[1])[:count]:
        during = [name for e, name in events if t - 0.05 <= e <= t + late / 1000 + 0.1]
        lines.append(f"{late:7.0f} ms at {t - start:6.1f} s  {', '.join(during)}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60,
                        help="training time measured, the second half with the slider moving")
    parser.add_argument("--idle", type=float, default=5, help="seconds of each idle phase")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--tile", type=int, default=196)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epoch-tiles", type=int, default=24,
                        help="tiles per epoch (a validation after each)")
    parser.add_argument("--val-slices", default="15")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for training (default: all cores but one)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        napari_unet.devices.cpu_threads = lambda: args.threads
    load = os.getloadavg()[0]

    viewer, widget = make_viewer()
    meter, slider = StallMeter(), Slider(viewer)
    run_events(3)  # let the window settle
    for phase, moving in (("idle", False), ("idle + slider", True)):
        slider.run(moving)
        meter.measure(phase)
        run_events(args.idle)
    slider.run(False)
    meter.measure(None)

    with tempfile.TemporaryDirectory() as folder:
        configure(widget, args, Path(folder) / "model.pt")
        run_events(1)  # the form's own updates come before a user clicks Start
        meter.measure("training")
        cpu_before, start = thread_cpu(), time.perf_counter()
        widget.start()
        if not widget.running:
            sys.exit(f"training did not start: {widget.status.text()}")
        records = Records(widget._worker)  # after the widget's handlers: notes their end
        records.events.append((start, "Start"))
        run_events(args.seconds / 2)
        slider.run(True)
        meter.measure("training + slider")
        run_events(args.seconds / 2)
        slider.run(False)
        meter.measure(None)
        busy = busy_threads(cpu_before, thread_cpu(), time.perf_counter() - start)
        widget.stop()
        run_events(30, until=lambda: not widget.running)
    viewer.close()

    print(f"{os.cpu_count()} cores, load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; torch threads: "
          f"{napari_unet.devices.cpu_threads()} training, {torch.get_num_threads()} elsewhere")
    print(f"threads busy while training (share of a core): {busy}")
    print(f"network depth {args.depth}, width {args.base_channels}, tile {args.tile}, "
          f"batch {args.batch_size}, {args.epoch_tiles} tiles an epoch")
    print(f"training: {records.steps} steps, {records.rate():.2f} steps/s, "
          f"{records.validations} validations")
    print(f"\n{'lateness of a 10 ms tick (ms)':<22}{'median':>9}{'p95':>9}{'p99':>9}"
          f"{'max':>9}{'ticks':>8}")
    for phase, ticks in meter.ticks.items():
        print(f"{phase:<22}{summary([late for _, late in ticks])}")
    windows = records.windows(start)
    print(f"\n{'largest stall (ms)':<22}" + "".join(f"{k:>16}" for k in
                                                   ["at start", "at validations", "otherwise"]))
    for phase in ("idle", "idle + slider", "training", "training + slider"):
        print(f"{phase:<22}{stalls_by_moment(meter.ticks.get(phase, []), windows)}")
    print("\nlargest stalls while training (no slider):")
    print("\n".join(largest_stalls(meter.ticks.get("training", []), records.events, start)))


if __name__ == "__main__":
    main()
