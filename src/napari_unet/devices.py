"""Choosing where the network runs, its precision and its CPU threads."""

import os
from contextlib import contextmanager

import torch

from napari_unet.errors import InputError


def pick_device(name: str = "auto") -> torch.device:
    """Return the device for a name; 'auto' picks CUDA, then MPS, then the CPU.

    Parameters
    ----------
    name : {'auto', 'cpu', 'cuda', 'mps'} or a torch device string such as 'cuda:1'

    Returns
    -------
    device : torch.device

    Raises
    ------
    InputError
        For an unknown name or a device this machine does not have.
    """
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this PyTorch sees no CUDA GPU")
    if kind == "mps" and not has_mps:
        raise InputError(f"device {name!r} asked for, but Apple's MPS is not available here")
    return torch.device(name)


def available_devices() -> list[str]:
    """Names of the devices this machine offers, for a GUI to list."""
    names = ["cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps and mps.is_available():
        names.append("mps")
    return names


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """Mixed-precision dtype for a device: bf16 on CUDA by default, none elsewhere."""
    if precision == "float32":
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


_GUI_CORES = 0
"""Cores kept free for a GUI in this process (napari's event loop); see `reserve_gui_core`."""


def reserve_gui_core() -> None:
    """Keep one core free for the GUI from now on (called when a widget starts a job)."""
    global _GUI_CORES
    _GUI_CORES = 1


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under ``taskset``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_threads() -> int:
    """Threads for CPU work: every core this process may use, but one when a GUI runs here."""
    return max(1, available_cores() - _GUI_CORES)


@contextmanager
def using_cpu_threads(device: torch.device, *, processes: int = 1):
    """Within the block, CPU work uses `cpu_threads` threads (a core stays free for a GUI).

    ``processes`` running side by side on this machine (data-parallel training)
    share them.
    """
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, cpu_threads() // processes))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def default_workers(device: torch.device, *, processes: int = 1) -> int:
    """DataLoader workers: none on the CPU (they would compete with the network), else up to 8.

    ``processes`` training side by side on this machine share its cores.
    """
    if device.type == "cpu":
        return 0
    return min(8, max(1, (available_cores() - processes) // processes))
