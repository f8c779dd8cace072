import logging

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.config import Config
from napari_unet.errors import InputError
from napari_unet.io.lazy import open_lazy
from napari_unet.jobs import drain
from napari_unet.model.files import ModelFile, make_model, save_model
from napari_unet.model.normalization import Normalization
from napari_unet.prediction import blocks as blocks
from napari_unet.prediction import volume as volume
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.prediction.volume import VolumeProgress, predict_volume

NORM = Normalization(low=0.0, high=255.0, mean=0.5, std=0.25)
SHAPE = (3, 52, 60)  # Y and X multiples of 4: `predict`'s own tiles are aligned (depth 3)


def save_tiny(path, depth=3):
    config = Config().replace(model={"depth": depth, "base_channels": 4})
    torch.manual_seed(0)
    model_file = ModelFile(config, NORM, make_model(config).state_dict())
    return save_model(path, model_file), model_file


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two busy cores: OpenMP threads that wait on each other cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def stack():
    return np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)


@pytest.fixture(scope="module")
def reference(tiny, stack):
    """`predict` on the whole in-memory stack."""
    model_file = tiny[1]
    return predict_probabilities(model_file.build_model(), NORM.unit(stack), NORM, tile=24)


def run(model_path, source, out, **options):
    return zarr.open_array(str(drain(predict_volume(model_path, source, out, **options))))


def test_blockwise_equals_whole_slice_predict(tiny, stack, reference, tmp_path):
    # Blocks of 2 x 20 x 28 divide none of the axes; other tile size than the reference.
    result = run(tiny[0], da.from_array(stack, chunks=(1, 16, 16)), tmp_path / "p.zarr",
                 tile=16, batch_size=3, block=(2, 20, 28))
    np.testing.assert_allclose(result[:], reference, atol=1e-5)


def test_result_does_not_depend_on_blocks_or_tiles(tmp_path):
    # Depth 4: tiles must start on multiples of 8 or the poolings see other phases.
    model_path, _ = save_tiny(tmp_path / "d4.pt", depth=4)
    image = np.random.default_rng(1).integers(0, 256, (2, 38, 45), dtype=np.uint8)
    a = run(model_path, image, tmp_path / "a.zarr", tile=20, block=(1, 20, 13))[:]
    b = run(model_path, image, tmp_path / "b.zarr", tile=60, block=(2, 64, 64))[:]
    np.testing.assert_allclose(a, b, atol=1e-5)


def write_zarr(path, stack):
    array = zarr.create_array(str(path), shape=stack.shape, chunks=(1, 32, 32), dtype=stack.dtype)
    array[:] = stack
    return array


@pytest.mark.parametrize("kind", ["ndarray", "dask", "zarr path", "zarr array", "tiff",
                                  "tiled tiff"])
def test_inputs(kind, tiny, stack, reference, tmp_path):
    if kind == "ndarray":
        source = stack
    elif kind == "dask":
        source = da.from_array(stack, chunks=(2, 24, 24))
    elif kind.startswith("zarr"):
        array = write_zarr(tmp_path / "in.zarr", stack)
        source = tmp_path / "in.zarr" if kind == "zarr path" else array
    else:
        source = tmp_path / "in.tif"
        tile = (32, 32) if kind == "tiled tiff" else None
        tifffile.imwrite(source, stack, photometric="minisblack", tile=tile)
    result = run(tiny[0], source, tmp_path / "p.zarr", tile=24, block=(3, 64, 64))
    np.testing.assert_allclose(result[:], reference, atol=1e-5)


def test_output_format_and_progress(tiny, stack, reference, tmp_path):
    tifffile.imwrite(tmp_path / "slice.tif", stack[1], photometric="minisblack")
    job = predict_volume(tiny[0], tmp_path / "slice.tif", tmp_path / "p.zarr", tile=24,
                         block=(1, 32, 32))
    progress = []
    path = drain(job, progress.append)
    assert progress == [VolumeProgress(done, 4) for done in range(1, 5)]
    result = zarr.open_array(str(path))
    assert (result.shape, result.chunks, result.dtype) == ((52, 60), (32, 32), np.float32)
    assert result.attrs["napari_unet"]["model"] == str(tiny[0])
    np.testing.assert_allclose(result[:], reference[1], atol=1e-5)


def test_existing_output_is_kept_unless_overwrite(tiny, tmp_path):
    out = tmp_path / "p.zarr"
    out.mkdir()
    (out / "keep").write_text("x")
    image = np.zeros((12, 12), np.uint8)
    with pytest.raises(InputError, match="exists"):
        drain(predict_volume(tiny[0], image, out))
    assert (out / "keep").read_text() == "x"
    result = run(tiny[0], image, out, overwrite=True)
    assert result.shape == (12, 12) and not (out / "keep").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]  # no staging folder left


def test_missing_output_folder(tiny, tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        drain(predict_volume(tiny[0], np.zeros((8, 8)), tmp_path / "none" / "p.zarr"))


def test_output_may_not_be_the_input(tiny, stack, tmp_path):
    write_zarr(tmp_path / "in.zarr", stack)
    with pytest.raises(InputError, match="is the input"):
        drain(predict_volume(tiny[0], tmp_path / "in.zarr", tmp_path / "in.zarr",
                             overwrite=True))


def test_output_may_not_hold_the_input(tiny, stack, tmp_path):
    group = zarr.open_group(str(tmp_path / "in.zarr"), mode="w")
    group.create_array("0", shape=stack.shape, dtype=stack.dtype)[:] = stack
    with pytest.raises(InputError, match="holds the input"):
        drain(predict_volume(tiny[0], tmp_path / "in.zarr" / "0", tmp_path / "in.zarr",
                             overwrite=True))
    assert (tmp_path / "in.zarr" / "0").is_dir()


@pytest.mark.parametrize("old", ["folder", "file", None])
def test_publish_replaces_in_one_move_or_keeps_the_old(tmp_path, monkeypatch, old):
    output, staging = tmp_path / "p.zarr", tmp_path / ".staging"
    staging.mkdir()
    (staging / "new").write_text("new")
    if old == "folder":
        output.mkdir()
        (output / "old").write_text("old")
    elif old == "file":
        output.write_text("old")
    replace = volume.os.replace

    def failing(src, dst):  # the new output cannot move in (a full or read-only folder)
        if str(src) == str(staging):
            raise OSError("no space left")
        replace(src, dst)

    monkeypatch.setattr(volume.os, "replace", failing)
    with pytest.raises(OSError):
        volume.publish(staging, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([".staging"] if old is None else
                                                          [".staging", "p.zarr"])
    if old:
        kept = output / "old" if old == "folder" else output
        assert kept.read_text() == "old"
    monkeypatch.setattr(volume.os, "replace", replace)
    volume.publish(staging, output)
    assert (output / "new").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]


def test_stopped_run_leaves_nothing(tiny, stack, tmp_path):
    job = predict_volume(tiny[0], stack, tmp_path / "p.zarr", tile=24, block=(1, 64, 64))
    assert next(job) == VolumeProgress(1, 3)
    job.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (da.zeros((10, 32, 3)), "looks like RGB"),
        (da.zeros((2, 2, 8, 8)), "has 4 axes"),
        (da.zeros((0, 8, 8)), "is empty"),
        (da.zeros((8, 8), dtype=bool), "dtype bool"),
    ],
)
def test_open_lazy_checks_shape_and_dtype(source, message):
    with pytest.raises(InputError, match=message):
        open_lazy(source)


def test_open_lazy_paths(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_lazy(tmp_path / "none.zarr")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        open_lazy(tmp_path / "bad.tif")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("0", shape=(4, 4), dtype="uint8")
    with pytest.raises(InputError, match=r"zarr group; name one of its arrays \(0\)"):
        open_lazy(tmp_path / "g.zarr")
    assert open_lazy(tmp_path / "g.zarr" / "0").shape == (4, 4)


class CountingArray:
    """An array-like that records the size of every read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, key):
        part = self.data[key]
        self.reads.append(part.size)
        return part


def test_each_block_reads_only_its_window(tiny, tmp_path):
    data = CountingArray(np.random.default_rng(2).integers(0, 256, (2, 160, 160), np.uint8))
    source = da.from_array(data, chunks=(1, 16, 16), name="counting")
    job = predict_volume(tiny[0], source, tmp_path / "p.zarr", tile=16, block=(1, 32, 32))
    per_block, seen = [], 0
    for _ in job:
        per_block.append(sum(data.reads[seen:]))
        seen = len(data.reads)
    assert len(per_block) == 50
    # A 32 px block and its 20 px margins span at most 6 chunks of 16 px per axis.
    assert max(per_block) <= 6 * 6 * 16 * 16 < 160 * 160
    assert max(data.reads) <= 16 * 16


def test_distributed_equals_local(tiny, stack, tmp_path):
    distributed = pytest.importorskip("distributed")
    tifffile.imwrite(tmp_path / "in.tif", stack, photometric="minisblack")
    options = {"tile": 16, "block": (2, 32, 40)}
    local = run(tiny[0], tmp_path / "in.tif", tmp_path / "local.zarr", **options)[:]
    # Threads, not processes: two worker processes importing torch cost 7-25 s on two busy
    # cores; what crosses a process boundary is checked by the next test.
    with (distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                   dashboard_address=None, silence_logs=logging.ERROR) as cluster,
          distributed.Client(cluster) as client):
        before = blocks.cached_network.cache_info().misses
        with distributed.get_task_stream(client) as stream:
            remote = run(tiny[0], tmp_path / "in.tif", tmp_path / "remote.zarr", client=client,
                         **options)
    ran = [t for t in stream.data if "predict_block" in str(t["key"])]
    assert len(ran) == 8  # every block ran on a worker
    np.testing.assert_array_equal(remote[:], local)
    assert blocks.cached_network.cache_info().misses == before  # the model was loaded once


def test_block_task_survives_pickling(tiny, stack, tmp_path):
    # What a worker process receives: the task, the block and the read of a TIFF window.
    tifffile.imwrite(tmp_path / "in.tif", stack, photometric="minisblack")
    source = open_lazy(tmp_path / "in.tif")
    model = tiny[1].build_model()
    block = blocks.plan_blocks(source.shape, (2, 32, 40), model, tile=16)[-1]
    out = zarr.create_array(str(tmp_path / "p.zarr"), shape=SHAPE, chunks=(2, 32, 40),
                            dtype="float32")
    task = blocks.BlockTask(str(tiny[0]), tiny[0].stat().st_mtime_ns, str(tmp_path / "p.zarr"),
                            False, "cpu", 4, None, False)
    work = dask.delayed(blocks.predict_block)(task, source[block.read()], block)
    assert cloudpickle.loads(cloudpickle.dumps(work)).compute(scheduler="sync") == block.index
    expected = run(tiny[0], stack, tmp_path / "all.zarr", tile=16, block=(2, 32, 40))
    np.testing.assert_array_equal(out[block.target()], expected[block.target()])
