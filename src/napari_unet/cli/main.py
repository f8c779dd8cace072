"""The ``napari-unet`` command line.

Every subcommand exits with 0 on success, 2 with a one-line message on a user
mistake (`InputError`), 1 with a one-line message on any other error, 130 when
interrupted and 141 when the reader of its output went away; never with a raw
traceback.
"""

import argparse
import os
import shutil
import subprocess
import sys

from napari_unet import __version__
from napari_unet.cli.bioimageio import add_export
from napari_unet.cli.evaluate import add_evaluate
from napari_unet.cli.predict import add_predict
from napari_unet.cli.train import add_train
from napari_unet.errors import InputError

DEMO_SCREENSHOT = "napari-unet-demo.png"


def _has_display() -> bool:
    return sys.platform != "linux" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def _demo_headless(args: argparse.Namespace) -> int:
    """Rerun the demo on a virtual screen (Xvfb) and save a screenshot."""
    if shutil.which("xvfb-run") is None:
        raise InputError(
            "no display found; install Xvfb (apt install xvfb libxcb-icccm4 libxcb-keysyms1) "
            "or run on a desktop"
        )
    shot = args.screenshot or DEMO_SCREENSHOT
    print(f"no display found: showing the demo on a virtual screen and saving {shot}")
    command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24",
               sys.executable, "-m", "napari_unet.cli.main", "demo", "--screenshot", shot]
    return subprocess.call(command)


def _check_napari() -> None:
    """Refuse the demo in one line when napari or Qt is not installed (a core-only install)."""
    import importlib.util

    missing = [name for name in ("napari", "qtpy") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"the demo needs {' and '.join(missing)}: install the GUI extra "
                         "(pip install -c constraints/cpu.txt -e '.[all]' in a clone)")


def _demo(args: argparse.Namespace) -> int:
    _check_napari()
    if not _has_display():
        return _demo_headless(args)
    from napari_unet._widgets.demo import open_demo

    return open_demo(screenshot=args.screenshot)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one subparser per job."""
    parser = argparse.ArgumentParser(
        prog="napari-unet",
        description="U-Net (Ronneberger et al. 2015) for EM membrane segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    jobs = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = jobs.add_parser(
        "demo",
        help="open napari with the ISBI 2012 sample and the plugin's widgets",
        description="Open napari with the ISBI 2012 sample loaded and the plugin's widgets "
        "docked. Without a display it runs on a virtual screen and saves a screenshot.",
    )
    demo.add_argument(
        "--screenshot", metavar="PNG", help="save a screenshot of the window there and exit"
    )
    demo.set_defaults(run=_demo)
    add_train(jobs)
    add_evaluate(jobs)
    add_predict(jobs)
    add_export(jobs)
    return parser


DEBUG = "NAPARI_UNET_DEBUG"
"""Environment variable: set to 1, unexpected errors show their traceback."""

BROKEN_PIPE = 141
"""Exit code when the reader of the output went away (``... | head``): 128 + SIGPIPE."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        _drop_stdout()
        return BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --nproc hands to torchrun
    if args.command is None:
        parser.print_help()
        return 0
    name = f"napari-unet {args.command}"
    try:
        return args.run(args)
    except InputError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as err:  # a bug or the machine (memory, disk): one line, not a traceback
        if os.environ.get(DEBUG) == "1":
            raise
        print(f"{name}: error: {_describe(err)}", file=sys.stderr)
        return 1


def _describe(err: Exception) -> str:
    """One line for an error that is not the user's mistake."""
    training_error = getattr(sys.modules.get("napari_unet.training.progress"), "TrainingError", ())
    if isinstance(err, training_error):  # says what to do already
        return str(err)
    if isinstance(err, MemoryError):
        return "out of memory"
    text = " ".join(str(err).split())
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__) + \
        f" (set {DEBUG}=1 to see where)"


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
