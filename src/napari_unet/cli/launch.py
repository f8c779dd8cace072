"""Training with several processes from the command line: ``train --nproc N`` and torchrun.

`launch` is ``napari-unet train --nproc N``: torchrun's own launcher
(`torch.distributed.run`), started in this process on this machine
(``--standalone``), runs ``python -m napari_unet train ...`` N times with the
same arguments, less ``--nproc``. `as_process` is what each of those processes
does with an error: process 0 prints it as any command does; every process
writes it to torchrun's error file, so that the launcher (torchrun's or this
one) names the process that failed first and its message.
"""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable

from napari_unet.errors import InputError

WORKER_MODULE = "napari_unet"
"""What each process runs (``python -m napari_unet``)."""

PEER_LOST_DELAY = 1
"""Seconds added to the time of a failure caused by another process's: torchrun names the
earliest failure as the root cause, and it counts in whole seconds."""


def launch(args: argparse.Namespace) -> int:
    """Run ``train`` in ``args.nproc`` processes through torchrun's launcher; return the exit code.

    The inputs and the output are checked here first, so that a mistake is
    said once, before any process starts.
    """
    from napari_unet.cli.common import config_from_args
    from napari_unet.cli.train import check_model_output
    from napari_unet.training.train import last_path_for

    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        raise InputError("--nproc starts torchrun; under torchrun, leave it out")
    if args.nproc < 1:
        raise InputError(f"--nproc must be at least 1, got {args.nproc}")
    output = check_model_output(args)
    if args.resume and not last_path_for(output).is_file():
        raise InputError(f"--resume: {last_path_for(output)} (the last model of {output}) "
                         "does not exist")
    config_from_args(args)
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    command = torchrun.get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={args.nproc}", "--module", WORKER_MODULE,
         *without_nproc(args.argv)])
    _quiet_torchrun()
    try:
        torchrun.run(command)
    except ChildFailedError as err:
        return _report(err.failures)
    except SignalException:  # Ctrl-C: process 0 has said where the last model is
        return 130
    return 0


def without_nproc(argv: list[str]) -> list[str]:
    """Return the command line without ``--nproc N`` (or ``--nproc=N``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _quiet_torchrun() -> None:
    """Keep torchrun's log lines (thread settings, closing signals) off the terminal."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _report(failures: dict) -> int:
    """Name the process that failed first and its message (process 0 has printed its own)."""
    rank = min(failures, key=lambda r: (failures[r].timestamp, r))
    failure = failures[rank]
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    if rank != 0:
        print(f"napari-unet train: process {rank} failed: "
              f"{message or f'exit code {failure.exitcode}'}", file=sys.stderr)
    return failure.exitcode if failure.exitcode > 0 else 1


def as_process(world, job: Callable[[], int]) -> int:
    """Run one process's part of ``train``; return its exit code.

    In a group, every error goes to torchrun's error file (`record`);
    process 0 raises it on, for the command line to print in one line, the
    others return its exit code without a word.
    """
    if world.size == 1:
        return job()
    try:
        return job()
    except BaseException as err:
        record(err)
        if world.main:
            raise
        return exit_code(err)


def exit_code(err: BaseException) -> int:
    """Return the command line's exit code for an error: 2 a mistake, 130 interrupted, 1 else."""
    if isinstance(err, InputError):
        return 2
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, SystemExit):
        return err.code if isinstance(err.code, int) else 1
    return 1


def record(err: BaseException) -> None:
    """Write an error's one-line message to torchrun's error file for this process, if any.

    A `~napari_unet.training.distributed.PeerLost` error follows another
    process's failure: it is dated a little later, so torchrun names that one.
    """
    from napari_unet.training.distributed import PeerLost

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or isinstance(err, KeyboardInterrupt | SystemExit):
        return
    text = " ".join(str(err).split())
    if not isinstance(err, InputError | PeerLost) and type(err).__name__ != "TrainingError":
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    delay = PEER_LOST_DELAY if isinstance(err, PeerLost) else 0
    try:
        with open(path, "w") as file:
            json.dump({"message": text, "timestamp": str(int(time.time()) + delay)}, file)
    except OSError:
        pass  # the message still reaches the terminal from process 0
