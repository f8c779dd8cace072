import csv

import dask.array as da
import numpy as np
import pytest
import torch

from napari_unet.devices import using_cpu_threads
from napari_unet.jobs import drain
from napari_unet.model.normalization import Normalization
from napari_unet.model.unet import UNet
from napari_unet.prediction.pipeline import prediction_job
from napari_unet.prediction.predict import predict_probabilities
from napari_unet.prediction.uncertainty import (
    FAR_WEIGHT,
    FLOOR,
    Ranking,
    crest_weight,
    disagreement,
    far_from_membrane,
    lazy_uncertainty,
    margin,
    rank,
    rank_slices,
    region_means,
    typical_reach,
    uncertainty_map,
)

NORM = Normalization(low=0.0, high=1.0, mean=0.5, std=0.25)


def two_cells(size=64, membrane=0.9):
    """P(membrane) of two cells split by a vertical membrane three pixels wide at 31-33."""
    p = np.full((size, size), 0.05, np.float32)
    p[:, 31:34] = membrane
    return p


def test_margin_is_one_at_the_threshold_and_zero_at_the_ends():
    p = np.array([0.0, 0.3, 0.6, 0.8, 1.0], np.float32)
    np.testing.assert_allclose(margin(p, 0.6), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    assert margin(p, 0.6).dtype == np.float32


def test_disagreement_scales_the_largest_spread_to_one():
    np.testing.assert_allclose(disagreement(np.array([0.0, 0.1, 0.5])), [0.0, 0.2, 1.0])


def test_crest_weight_counts_the_line_between_two_cells_fully():
    weight = crest_weight(two_cells())
    assert weight[:, 30:35].min() == 1.0  # the crest and two pixels either side
    assert (weight[:, :20] == FLOOR).all() and (weight[:, 45:] == FLOOR).all()
    # a stack is weighted slice by slice
    stack = np.stack([two_cells(), np.full((64, 64), 0.05, np.float32)])
    np.testing.assert_array_equal(crest_weight(stack)[0], weight)
    assert (crest_weight(stack)[1] == FLOOR).all()  # one cell: no crest


def test_a_faint_crest_between_two_cells_is_the_least_sure_place():
    inf = float("inf")  # the margin alone, nothing counts as far from a membrane
    faint = uncertainty_map(two_cells(membrane=0.55), threshold=0.5, reach=inf)
    sure = uncertainty_map(two_cells(membrane=0.99), threshold=0.5, reach=inf)
    assert faint[:, 32].min() > 0.8 and sure[:, 32].max() < 0.05
    assert faint[:, :20].max() < 0.1 * faint[:, 32].min()  # confident interior, away from it


def test_uncertainty_uses_the_spread_when_given():
    p = two_cells()
    spread = np.zeros_like(p)
    spread[10, 32] = 0.25
    u = uncertainty_map(p, threshold=0.5, spread=spread, reach=float("inf"))
    assert u[10, 32] == pytest.approx(0.5) and np.count_nonzero(u) == 1


def test_lazy_uncertainty_equals_the_map_in_memory():
    p = np.stack([two_cells(membrane=0.6), two_cells(membrane=0.7)])
    lazy = da.from_array(p, chunks=(1, 16, 16))
    reach = typical_reach(lazy, threshold=0.5)
    assert reach == typical_reach(p, threshold=0.5)
    np.testing.assert_allclose(lazy_uncertainty(lazy, threshold=0.5, reach=reach).compute(),
                               uncertainty_map(p, threshold=0.5))


def test_typical_reach_is_twice_the_median_distance_to_a_membrane():
    p = np.full((3, 20, 20), 0.1, np.float32)
    p[:, :, 0] = 0.9  # a membrane along the left edge: distances 1, 2, ..., 19 in every row
    assert typical_reach(p, threshold=0.5) == 2 * 10
    p[1] = 0.9  # a slice of membrane only is not measured
    assert typical_reach(p, threshold=0.5) == 2 * 10
    assert typical_reach(np.zeros((2, 8, 8)), threshold=0.5) == float("inf")


def test_a_cell_much_wider_than_its_neighbours_is_unsure():
    """Where a membrane is missed, two cells merge into one twice as wide: it stands out."""
    p = np.full((96, 192), 0.05, np.float32)
    for x in (0, 16, 32, 48, 64, 80, 96, 160):  # cells 15 px wide, then one of 63 px
        p[:, x:x + 1] = 0.95
    u = uncertainty_map(p, threshold=0.5)
    merged, narrow = u[:, 97:160], u[:, 1:96]
    assert narrow.max() < 0.3 and merged[:, 28:36].min() == FAR_WEIGHT


def test_region_means_handle_ragged_edges():
    plane = np.arange(5 * 7, dtype=float).reshape(5, 7)
    means = region_means(plane, 4)
    assert means.shape == (2, 2)
    assert means[1, 1] == pytest.approx(plane[4:, 4:].mean())
    assert means[0, 0] == pytest.approx(plane[:4, :4].mean())


def test_ranking_orders_slices_and_finds_the_least_sure_square():
    u = np.zeros((3, 300, 260), np.float32)
    u[0] += 0.1
    u[1, 140:150, 200:210] = 1.0  # a small hot spot: mean 100 / 78000
    u[2] += 0.2
    ranking = rank(u, region=128)
    assert ranking.order() == [2, 0, 1]
    assert ranking.regions.shape == (3, 3, 3)
    assert ranking.hotspot(1) == (128 + 64, 128 + 64)
    np.testing.assert_allclose(ranking.slices, u.mean(axis=(1, 2)), rtol=1e-6)
    assert [p.done for p in _progress(rank_slices(u))] == [1, 2, 3]


def test_the_hotspot_of_a_narrow_last_square_lies_inside_the_slice():
    u = np.zeros((1, 300, 300), np.float32)
    u[0, 280:, 280:] = 1.0  # the last square is 44 pixels wide: 256-299
    assert rank(u, region=128).hotspot(0) == (256 + 22, 256 + 22)


def _progress(job):
    records = []
    drain(job, records.append)
    return records


def test_a_slice_predicted_alone_updates_its_own_rank():
    ranking = Ranking.unknown(4, 64, 64, region=32)
    assert ranking.order() == []
    one = rank(np.full((64, 64), 0.3, np.float32), region=32)
    ranking = ranking.with_slice(2, one).with_slice(0, rank(np.zeros((64, 64)), region=32))
    assert ranking.order() == [2, 0]
    assert ranking.slices[2] == pytest.approx(0.3) and np.isnan(ranking.slices[1])
    with pytest.raises(ValueError, match="different"):
        ranking.with_slice(1, rank(np.zeros((64, 96)), region=32))


def test_ranking_csv_lists_the_least_sure_first(tmp_path):
    u = np.zeros((3, 64, 64), np.float32)
    u[1, :10, 50:] = 0.9
    u[2] = 0.01
    path = rank(u, region=32).write_csv(tmp_path / "ranking.csv")
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert [int(r["slice"]) for r in rows] == [1, 2, 0]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    assert (int(rows[0]["hotspot_y"]), int(rows[0]["hotspot_x"])) == (16, 48)
    assert float(rows[0]["uncertainty"]) == pytest.approx(u[1].mean(), abs=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["ranking.csv"]  # no temporary left


# --- with a network ---------------------------------------------------------------


def tiny():
    torch.manual_seed(0)
    return UNet(depth=3, base_channels=4, padding="same").eval()


def test_spread_is_the_disagreement_of_the_eight_views():
    model, rng = tiny(), np.random.default_rng(0)
    unit = rng.random((2, 48, 48), dtype=np.float32)
    plain = predict_probabilities(model, unit, NORM, tile=24, tta=True)
    prob, spread = predict_probabilities(model, unit, NORM, tile=24, tta=True, spread=True)
    np.testing.assert_allclose(prob, plain, atol=1e-6)
    assert spread.shape == unit.shape and spread.dtype == np.float32 and spread.max() > 0
    # a uniform image looks the same in every view: nothing to disagree on
    _, flat = predict_probabilities(model, np.full((40, 40), 0.5, np.float32), NORM, tile=40,
                                    tta=True, spread=True)
    assert flat.max() < 1e-3
    with pytest.raises(ValueError, match="tta"):
        predict_probabilities(model, unit, NORM, tile=24, spread=True)


@pytest.mark.parametrize("tta", [False, True])
def test_prediction_job_maps_and_ranks_the_uncertainty(tta):
    model, rng = tiny(), np.random.default_rng(1)
    unit = rng.random((3, 40, 40), dtype=np.float32)
    result = drain(prediction_job(model, unit, NORM, threshold=0.5, min_size=None,
                                  device=torch.device("cpu"), tile=40, tta=tta))
    spread = None
    if tta:  # the job's threads: the same float sums, so the same spread
        with using_cpu_threads(torch.device("cpu")):
            _, spread = predict_probabilities(model, unit, NORM, tile=40, tta=True, spread=True)
    expected = uncertainty_map(result.probabilities, threshold=0.5, spread=spread)
    np.testing.assert_allclose(result.uncertainty, expected, atol=1e-6)
    np.testing.assert_allclose(result.ranking.slices, expected.mean(axis=(1, 2)), rtol=1e-5)
    assert result.uncertainty.max() <= 1 and result.uncertainty.min() >= 0
    skipped = drain(prediction_job(model, unit, NORM, threshold=0.5, min_size=None,
                                   device=torch.device("cpu"), tile=40, uncertainty=False))
    assert skipped.uncertainty is None and skipped.ranking is None


def test_far_from_any_membrane_is_unsure():
    p = two_cells(size=128)  # membrane at columns 31-33
    far = far_from_membrane(p, threshold=0.5, reach=32)
    assert (far[:, :66] == 0).all()  # within 32 px of the membrane
    assert far[:, 33 + 64:].min() == 1.0  # 64 px and more away: twice the reach
    assert far[0, 33 + 48] == pytest.approx(0.5)
    no_membrane = far_from_membrane(np.zeros((2, 16, 16)), threshold=0.5, reach=1000)
    assert (no_membrane == 1).all()
    assert uncertainty_map(p, threshold=0.5, reach=32)[0, -1] == FAR_WEIGHT
    assert uncertainty_map(p, threshold=0.5, reach=32)[0, 10] < 0.3


def _stack_with_strangers(side: int, trained: list[int]) -> np.ndarray:
    """Slices the bundled model trained on, then noise, stripes and a checkerboard."""
    from napari_unet.io.sample import isbi2012

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    strangers = [rng.integers(0, 256, (side, side)),
                 127 + 100 * np.sin(xx / 3) * np.sin(yy / 7),
                 ((xx // 12 + yy // 12) % 2) * 120 + 60]
    return np.concatenate([isbi2012()[0][trained, :side, :side],
                           np.stack(strangers).astype(np.uint8)])


def test_bundled_model_is_unsure_of_noise_and_unseen_textures_not_of_its_training():
    from napari_unet.model.files import load_model
    from napari_unet.prediction.pipeline import image_job

    model_file = load_model("isbi2012")
    trained = [0, 1, 2, 3]
    assert not set(trained) & set(model_file.config.train.val_slices)
    result = drain(image_job(model_file, _stack_with_strangers(192, trained),
                             threshold=model_file.threshold, min_size=None, device="cpu"))
    scores, order = result.ranking.slices, result.ranking.order()
    assert scores[4] > 2 * scores[:4].max()  # noise: no membrane found at all
    assert order[0] == 4 and set(order[1:3]) == {5, 6}  # then the two textures
    assert min(scores[5:]) > 1.1 * scores[:4].max()


def test_with_tta_noise_is_the_least_sure():
    from napari_unet.model.files import load_model
    from napari_unet.prediction.pipeline import image_job

    model_file = load_model("isbi2012")
    stack = _stack_with_strangers(96, [0, 1])[:3]  # TTA is 8 passes: small and few
    result = drain(image_job(model_file, stack, threshold=model_file.threshold, min_size=None,
                             device="cpu", tta=True))
    scores = result.ranking.slices
    assert result.ranking.order()[0] == 2 and scores[2] > 5 * scores[:2].max()
