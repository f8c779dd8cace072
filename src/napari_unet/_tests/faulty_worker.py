"""``python -m faulty_worker train ...`` (this folder on PYTHONPATH): the command line,
whose process 1 of a group fails reading a sample, as a disk read error would.

For `test_distributed_cli`: a process that fails alone must bring the others down, and its
message must reach the terminal. With ``--nproc`` the launcher starts this module again.
"""

import os
import sys

import napari_unet.cli.launch as launch
from napari_unet.cli.main import main
from napari_unet.training.samples import TrainingSamples

FAILING_SAMPLE = 3


def _fail_on_process_1() -> None:
    read = TrainingSamples.__getitem__

    def failing(self, index):
        if index >= FAILING_SAMPLE:
            raise OSError(f"sample {index} could not be read on process 1")
        return read(self, index)

    TrainingSamples.__getitem__ = failing


if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        _fail_on_process_1()
    launch.WORKER_MODULE = "faulty_worker"
    sys.exit(main())
