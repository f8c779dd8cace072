"""Data-parallel training: the processes torchrun starts train one model together.

`~napari_unet.training.train.train` asks a *world* everything that differs
between one process and several: which samples this process draws, how one
optimizer update runs, the clock, and the decisions every process must take
together. `Solo` is one process (the napari widget, a plain command); `Group`
is one of the processes of a ``torchrun`` launch (`joined`).

A group behaves like one process with the same settings, to float rounding:

- **Samples.** ``batch_size`` stays the batch of one update. Each global batch
  (the samples one process would draw, by ``(seed, epoch, index)``) is split
  across the processes, process ``r`` taking its items ``r, r + N, ...``; a
  process whose share is empty (a batch smaller than the group) still runs an
  empty forward pass, so every process takes part in every collective.
- **Loss.** Eq. 1 divides by the annotated pixels of the whole batch. Each
  process sums its share (`~napari_unet.training.loss.loss_terms`), the sums
  and counts are added over the group, and each process back-propagates
  ``N * share_sum / batch_count``: DistributedDataParallel's average of the
  gradients is then the gradient of the batch's loss, even when the shares hold
  different numbers of annotated pixels (scribbles).
- **Batch norm.** The statistics of the whole batch: `torch.nn.SyncBatchNorm`
  on CUDA, `GroupBatchNorm` on the CPU (PyTorch's is CUDA only).
- **Decisions.** Process 0's clock drives the time budget and the cosine
  schedule; its validation, early stopping and files are the run's; a Ctrl-C
  or SIGTERM on any process stops all of them after the same update, and
  process 0 saves the last model. A non-finite loss is seen by every process
  at once (the sums are shared).

Dropout (off in every preset) draws its masks per process, so with dropout a
group matches one process in distribution, not bit for bit.
"""

import contextlib
import itertools
import math
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from napari_unet.devices import pick_device
from napari_unet.errors import InputError
from napari_unet.training.progress import TrainingError
from napari_unet.training.setup import (
    Setup,
    forward_terms,
    make_loader,
    out_of_memory,
    update,
)

__all__ = ["Group", "GroupBatchNorm", "PeerLost", "Solo", "joined", "shares"]

TIMEOUT = timedelta(minutes=30)
"""How long a process waits in a collective (the others wait while process 0 validates)."""


class PeerLost(RuntimeError):
    """Another process of the run went down; its own message says why."""


class Solo:
    """One process: the training loop as it always was."""

    rank, size, local_size, main = 0, 1, 1, True

    def prepare(self, setup: Setup) -> None:
        """Nothing to wrap."""

    def batches(self, setup: Setup, start: int, generator: torch.Generator) -> Iterator[dict]:
        """Return the batches of the current epoch from sample ``start`` on."""
        return iter(make_loader(setup, start, generator))

    def update(self, setup: Setup, optimizer, batches) -> tuple[float, int]:
        """One optimizer update (`napari_unet.training.setup.update`)."""
        return update(setup, optimizer, batches)

    def check(self, start_time: float) -> tuple[float, bool]:
        """Seconds since ``start_time``, and whether a signal asked to stop (never here)."""
        return time.monotonic() - start_time, False

    def agree(self, values: list[float]) -> list[float]:
        """Process 0's values (here: these)."""
        return values

    def fork_rng(self, seed: int, step: int) -> None:
        """Nothing to do: one process keeps torch's random stream (dropout)."""

    def describe(self) -> dict:
        """Return what a START record says about the processes (nothing for one)."""
        return {}

    def stopping_on_signals(self):
        """Ctrl-C stays a KeyboardInterrupt in one process."""
        return contextlib.nullcontext()


def shares(start: int, length: int, batch_size: int, rank: int, size: int) -> list[list[int]]:
    """Return one process's sample indices of each global batch from ``start`` to ``length``.

    Parameters
    ----------
    start, length : int
        First sample and samples per epoch.
    batch_size : int
        Samples of one global batch.
    rank, size : int
        This process and the number of processes.

    Returns
    -------
    shares : list of list of int
        One list per global batch (empty when the batch has fewer items than ``rank + 1``).
    """
    return [list(range(first + rank, min(first + batch_size, length), size))
            for first in range(start, length, batch_size)]


class Group(Solo):
    """One of ``size`` processes training one model (its collectives on ``device``).

    Parameters
    ----------
    device : torch.device
        This process's device (``cuda:LOCAL_RANK`` or the CPU).
    rank, size, local_size : int
        This process, all processes, and those on this machine.
    """

    def __init__(self, device: torch.device, rank: int, size: int, local_size: int):
        self.device, self.rank, self.size, self.local_size = device, rank, size, local_size
        self.main = rank == 0
        self.signalled = False
        self.network: nn.Module | None = None

    def prepare(self, setup: Setup) -> None:
        """Synchronise batch norm and wrap the network in DistributedDataParallel.

        Process 0's weights are broadcast to the others, so every process starts
        from the same model. ``setup.model`` stays the network itself (its state
        dict has the same keys as one process's: model files do not change).
        """
        if setup.device.type == "cuda":
            setup.model = nn.SyncBatchNorm.convert_sync_batchnorm(setup.model)
        else:
            setup.model = GroupBatchNorm.convert(setup.model)
        ids = [setup.device.index] if setup.device.type == "cuda" else None
        with self._collective():
            # Synchronised statistics keep the buffers equal: no broadcast before each forward.
            self.network = nn.parallel.DistributedDataParallel(
                setup.model, device_ids=ids, forward_sync_buffers=False)

    def batches(self, setup: Setup, start: int, generator: torch.Generator) -> Iterator[dict]:
        """Return this process's shares of the current epoch's batches from sample ``start`` on."""
        mine = shares(start, len(setup.samples), setup.config.train.batch_size, self.rank,
                      self.size)
        loaded = iter(make_loader(setup, start, generator, batches=[s for s in mine if s],
                                  processes=self.local_size))
        for share in mine:
            yield next(loaded) if share else _empty_batch(setup)

    def update(self, setup: Setup, optimizer, batches) -> tuple[float, int]:
        """One optimizer update of the whole group; return the batch's loss and tile count.

        The loss is eq. 1 over the whole global batch; a non-finite one is
        returned, on every process, without updating the weights.
        """
        t = setup.config.train
        optimizer.zero_grad(set_to_none=True)
        parts = list(itertools.islice(batches, t.accumulate))
        total, tiles = 0.0, 0
        with self._collective():  # batch norm and the loss's terms add up over the group
            for i, batch in enumerate(parts):
                # Gradients are averaged once, after the update's last batch.
                syncing = (self.network.no_sync() if i < len(parts) - 1
                           else contextlib.nullcontext())
                with syncing:
                    try:
                        share_sum, annotated = forward_terms(setup, batch, self.network)
                    except torch.cuda.OutOfMemoryError:
                        raise out_of_memory(setup) from None
                    loss_sum, count, batch_tiles = self._sum(
                        [share_sum.detach(), annotated, len(batch["image"])])
                    loss = loss_sum / max(count, 1.0)
                    if not math.isfinite(loss):
                        return loss, tiles
                    (share_sum * (self.size / (max(count, 1.0) * t.accumulate))).backward()
                total += loss
                tiles += round(batch_tiles)
        optimizer.step()
        return total / max(1, len(parts)), tiles

    def check(self, start_time: float) -> tuple[float, bool]:
        """Process 0's seconds since ``start_time``, and whether any process was signalled."""
        elapsed = time.monotonic() - start_time if self.main else 0.0
        flags = torch.tensor([elapsed, float(self.signalled)], dtype=torch.float64,
                             device=self._comm_device())
        with self._collective():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags[0].item(), bool(flags[1].item())

    def agree(self, values: list[float]) -> list[float]:
        """Process 0's values (decisions, learning rates), on every process."""
        shared = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        with self._collective():
            dist.broadcast(shared, 0)
        return shared.tolist()

    def fork_rng(self, seed: int, step: int) -> None:
        """Give processes other than 0 their own torch random stream (dropout masks).

        Process 0 keeps the run's stream (saved in the last model), the others
        draw from ``(seed, rank, step)``.
        """
        if not self.main:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, step])
                                  .generate_state(1)[0]))

    def describe(self) -> dict:
        """Return the number of processes, for the START record."""
        return {"processes": self.size}

    @contextlib.contextmanager
    def stopping_on_signals(self):
        """Within the block, SIGINT and SIGTERM ask the group to stop after the current update.

        torchrun forwards a Ctrl-C to its workers as SIGINT and a SLURM
        cancellation arrives as SIGTERM; either stops every process at the same
        step (the next `check`), so that process 0 saves a last model that
        resumes exactly. Main thread only.
        """
        def stop(signum, frame):
            self.signalled = True

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _sum(self, values: list) -> list[float]:
        """Add numbers (floats, ints or 0-d tensors) over the group, in float64."""
        terms = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self._comm_device())
                             for v in values])
        dist.all_reduce(terms)
        return terms.tolist()

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    @contextlib.contextmanager
    def _collective(self):
        """Raise `PeerLost` when a collective fails: another process went down.

        PyTorch raises a plain RuntimeError then (gloo: "Connection closed by
        peer"); its first line goes on in the message.
        """
        try:
            yield
        except RuntimeError as err:
            if isinstance(err, PeerLost | TrainingError | torch.cuda.OutOfMemoryError):
                raise
            raise PeerLost(f"another process of this run stopped ({_first_sentence(err)})") \
                from err


def _first_sentence(err: Exception) -> str:
    """Return an error's first sentence, without the source location gloo puts first."""
    text = " ".join(str(err).split())
    text = re.sub(r"^\[[^\]]*\] ", "", text)
    return text.split(". ")[0].rstrip(".") or type(err).__name__


def _empty_batch(setup: Setup) -> dict:
    """Return a batch of no tiles, for a process whose share of a small batch is empty."""
    plan = setup.samples.plan
    return {"image": torch.zeros((0, 1, plan.input, plan.input)),
            "target": torch.zeros((0, plan.output, plan.output), dtype=torch.int64),
            "weights": torch.zeros((0, plan.output, plan.output))}


class GroupBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole group's batch.

    What `torch.nn.SyncBatchNorm` does on CUDA, for the CPU (gloo): the sums
    behind the mean and the variance are added over the processes with an
    all-reduce that back-propagates (`_SumOverGroup`), so each process
    normalises its share with the statistics one process would compute over
    the whole batch. Evaluation, and a single process, use
    BatchNorm2d itself. Same parameters and buffers as BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` with the group's batch statistics (training) or BatchNorm2d's."""
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() / max(1, x.shape[1]))])
        total = _SumOverGroup.apply(local)
        count = total[-1]
        mean = total[:-1] / count
        centred = x - mean[None, :, None, None]
        var = _SumOverGroup.apply(centred.square().sum(dims)) / count
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), count.item())
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                    else self.momentum)
        unbiased = var * count / max(count - 1.0, 1.0)
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every BatchNorm2d in ``module`` by a GroupBatchNorm sharing its tensors."""
        if type(module) is nn.BatchNorm2d:
            group = cls(module.num_features, module.eps, module.momentum, module.affine,
                        module.track_running_stats)
            group.load_state_dict(module.state_dict())
            if module.affine:
                group.weight, group.bias = module.weight, module.bias
            group.train(module.training)
            return group
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module


class _SumOverGroup(torch.autograd.Function):
    """The sum of a tensor over the processes; its gradient is the sum of theirs.

    Every process's loss depends on every process's share through the sum, so
    the gradient of the group's loss with respect to one share adds up the
    gradients of all processes' losses.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


@contextlib.contextmanager
def joined(device_name: str = "auto") -> Iterator[Solo]:
    """Join the process group torchrun describes in the environment; `Solo` outside torchrun.

    NCCL on CUDA (process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``), gloo on the
    CPU. The group is left at the end of the block.

    Parameters
    ----------
    device_name : str
        The run's device setting ('auto', 'cpu', 'cuda').

    Yields
    ------
    world : Solo or Group
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        yield Solo()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    device = pick_device(device_name)
    if device.type == "mps":
        raise InputError("data-parallel training runs on CUDA GPUs or CPUs, not on Apple's MPS: "
                         "use --device cpu")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"{local_size} processes on this machine but "
                             f"{torch.cuda.device_count()} GPU(s): start one process per GPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield Group(device, rank, size, local_size)
    finally:
        dist.destroy_process_group()
