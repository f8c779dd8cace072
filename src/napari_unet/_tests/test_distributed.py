"""Data-parallel training with real processes: two gloo processes on the CPU, a tiny network.

The two-process runs of a module share one launch of two spawned processes
(`group_results`), which runs every job in turn; each test then compares its
job's results with one process's run here.
"""

import functools
import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from napari_unet.config import Config
from napari_unet.jobs import drain
from napari_unet.model.files import load_model
from napari_unet.training.distributed import Solo, joined, shares
from napari_unet.training.progress import Event, TrainingError
from napari_unet.training.train import last_path_for, train

STEPS_BEFORE_STOP = 2


def scribbled(labels: np.ndarray) -> np.ndarray:
    """Labels with large unannotated parts, so that tiles hold different annotated counts.

    Eq. 1 divides by the annotated pixels of the whole batch: a process that
    divided by its own share's count would change the gradient here (not on
    fully annotated tiles, whose counts are all equal).
    """
    out = labels.copy()
    out[:, :, :40] = 0
    out[0, 70:, :] = 0
    out[1, :, 90:] = 0
    out[2, ::3, :] = 0
    return out


def ddp_config(**train) -> Config:
    """A tiny 'same' network with batch norm (the cpu preset's kind); 7 samples in batches of 3.

    The last batch of an epoch holds one tile, so the second process's share of
    it is empty.
    """
    return Config().replace(
        model={"depth": 2, "base_channels": 4, "padding": "same", "batch_norm": True},
        train={"tile": 32, "epochs": 2, "samples_per_epoch": 7, "batch_size": 3,
               "val_slices": (3,), "device": "cpu", "patience": None, "momentum": 0.9,
               **train},
    )


# Jobs run by each spawned process: (world, image, labels, folder) -> picklable result.

def run_to_end(world, image, labels, folder, *, config, resume_from=None):
    own = folder / f"rank{world.rank}"
    own.mkdir(exist_ok=True)
    output = own / "m.pt"
    resume = None
    if resume_from is not None:  # continue a run saved by one process
        output = folder / resume_from
        resume = last_path_for(output)
    result = drain(train(image, labels, config, output=output, resume=resume, world=world))
    return {"state": result.last.state_dict, "reason": result.reason,
            "files": sorted(p.name for p in own.iterdir()), "step": result.last.training_state
            ["step"], "history": result.history}


def run_and_stop(world, image, labels, folder, *, config):
    """Stop after `STEPS_BEFORE_STOP` updates by closing the generator (Stop, or Ctrl-C)."""
    job = train(image, labels, config, output=folder / "stopped.pt", world=world)
    steps = 0
    for progress in job:
        steps += progress.event is Event.STEP
        if steps == STEPS_BEFORE_STOP:
            break
    job.close()
    return {}


def run_until_it_stops(world, image, labels, folder, *, config):
    """Return why a run ended on this process: its reason, or its error's message."""
    try:
        result = drain(train(image, labels, config, world=world))
        return {"ended": result.reason, "step": result.last.training_state["step"]}
    except TrainingError as err:
        return {"ended": f"error: {err}"}


def run_signalled(world, image, labels, folder, *, config):
    """Process 1 receives SIGINT after its first update; every process must stop there."""
    job = train(image, labels, config, output=folder / "signalled.pt", world=world)
    try:
        with world.stopping_on_signals():
            for progress in job:
                if progress.event is Event.STEP and progress.step == 1 and world.rank == 1:
                    os.kill(os.getpid(), signal.SIGINT)
        return {"ended": "not interrupted"}
    except KeyboardInterrupt:
        last = last_path_for(folder / "signalled.pt")
        return {"ended": "interrupted",
                "saved_step": load_model(last).training_state["step"] if world.main else None}


def _process(rank, size, port, image, labels, folder, jobs):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size))
    with joined("cpu") as world:
        results = {name: job(world, image, labels, folder) for name, job in jobs}
    torch.save(results, folder / f"results{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(jobs, image, labels, folder, size=2) -> list[dict]:
    """Run ``jobs`` in turn in ``size`` spawned processes; return each process's results."""
    mp.start_processes(_process, args=(size, _free_port(), image, labels, folder, jobs),
                       nprocs=size, start_method="spawn")
    return [torch.load(folder / f"results{rank}.pt") for rank in range(size)]


@pytest.fixture(scope="module")
def group_results(isbi_small, tmp_path_factory):
    """Every two-process job of this module, run in one launch of two processes."""
    image, labels = isbi_small
    labels = scribbled(labels)
    folder = tmp_path_factory.mktemp("ddp")
    # One process's run, stopped after a few updates, for the group to resume.
    job = train(image, labels, ddp_config(), output=folder / "solo.pt")
    for _ in range(1 + STEPS_BEFORE_STOP):  # START and the updates
        next(job)
    job.close()
    jobs = [
        ("equal", functools.partial(run_to_end, config=ddp_config())),
        ("accumulate", functools.partial(run_to_end, config=ddp_config(
            batch_size=2, accumulate=2, samples_per_epoch=9, schedule="cosine"))),
        ("stopped", functools.partial(run_and_stop, config=ddp_config())),
        ("resumed", functools.partial(run_to_end, config=ddp_config(), resume_from="solo.pt")),
        ("time budget", functools.partial(run_until_it_stops,
                                          config=ddp_config(minutes=0.0, epochs=50))),
        ("early stopping", functools.partial(run_until_it_stops, config=ddp_config(
            epochs=10, lr=1e-30, patience=1, monitor="val_loss"))),
        ("nan", functools.partial(run_until_it_stops, config=ddp_config(lr=1e12, epochs=20))),
        ("signal", functools.partial(run_signalled, config=ddp_config(epochs=20))),
    ]
    return run_group(jobs, image, labels, folder), image, labels, folder


def assert_close(group_state, solo_state, atol=1e-5):
    assert group_state.keys() == solo_state.keys()
    worst = max((group_state[k].double() - solo_state[k].double()).abs().max().item()
                for k in solo_state)
    assert worst <= atol, f"max abs difference {worst:.3g}"
    return worst


def test_shares_cover_each_batch_once():
    parts = [shares(0, 7, 3, rank, 2) for rank in range(2)]
    assert parts == [[[0, 2], [3, 5], [6]], [[1], [4], []]]
    assert shares(3, 7, 3, 1, 2) == [[4], []]  # a resumed epoch starts mid-way


def test_two_processes_train_the_model_of_one(group_results):
    (rank0, rank1), image, labels, _ = group_results
    solo = drain(train(image, labels, ddp_config(), world=Solo()))
    worst = assert_close(rank0["equal"]["state"], solo.last.state_dict)
    print(f"two processes vs one: max abs weight difference {worst:.2g}")
    # The processes hold the same model (DistributedDataParallel averaged the gradients).
    assert_close(rank1["equal"]["state"], rank0["equal"]["state"], atol=0)
    assert rank0["equal"]["step"] == solo.last.training_state["step"] == 6
    assert [h["val_loss"] for h in rank0["equal"]["history"]] == pytest.approx(
        [h["val_loss"] for h in solo.history], rel=1e-4)


def test_accumulation_and_a_schedule_train_the_model_of_one(group_results):
    (rank0, _), image, labels, _ = group_results
    config = ddp_config(batch_size=2, accumulate=2, samples_per_epoch=9, schedule="cosine")
    solo = drain(train(image, labels, config))
    assert_close(rank0["accumulate"]["state"], solo.last.state_dict)


def test_only_process_0_writes_model_files(group_results):
    (rank0, rank1), *_ = group_results
    assert rank0["equal"]["files"] == ["m.last.pt", "m.pt"]
    assert rank1["equal"]["files"] == []
    assert rank1["equal"]["history"] == []  # nor validates


def test_resume_across_world_sizes_continues_the_epoch(group_results):
    _, image, labels, folder = group_results
    whole = drain(train(image, labels, ddp_config()))
    # two processes stopped after 2 updates, one resumes: mid-epoch, at sample 6 of 7
    stopped = load_model(last_path_for(folder / "stopped.pt"))
    assert stopped.training_state["step"] == STEPS_BEFORE_STOP
    assert stopped.training_state["position"] == 6 and stopped.training_state["epoch"] == 0
    rest = drain(train(image, labels, ddp_config(), output=folder / "stopped.pt",
                       resume=last_path_for(folder / "stopped.pt")))
    assert_close(rest.last.state_dict, whole.last.state_dict)
    # one process stopped after 2 updates, two processes resumed it
    (rank0, _), *_ = group_results
    assert_close(rank0["resumed"]["state"], whole.last.state_dict)
    assert rank0["resumed"]["step"] == whole.last.training_state["step"]


@pytest.mark.parametrize("job", ["time budget", "early stopping", "nan"])
def test_every_process_stops_together(group_results, job):
    (rank0, rank1), *_ = group_results
    assert rank0[job] == rank1[job]
    ended = rank0[job]["ended"]
    expected = {"time budget": "time budget", "early stopping": "early stopping",
                "nan": "error: loss became"}[job]
    assert ended.startswith(expected)


def test_a_signal_on_one_process_stops_all_and_saves_the_last_model(group_results):
    (rank0, rank1), *_ = group_results
    assert rank0["signal"]["ended"] == rank1["signal"]["ended"] == "interrupted"
    # process 1 was signalled after update 1: every process stopped there, 0 saved it
    assert rank0["signal"]["saved_step"] == 1
