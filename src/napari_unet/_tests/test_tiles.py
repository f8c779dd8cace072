import pytest

from napari_unet.config import ModelConfig
from napari_unet.errors import InputError
from napari_unet.model.sizes import output_size
from napari_unet.prediction.tiles import SAME_CONTEXT, TilePlan, default_tile, tile_origins


def net(depth=5, padding="valid"):
    return ModelConfig(depth=depth, padding=padding)


def test_training_tile_of_the_paper():
    assert TilePlan.for_training(net(), 388) == TilePlan(input=572, output=388, halo=92,
                                                         offset=0, grid=16)


def test_training_tile_rounds_up_to_a_usable_one():
    plan = TilePlan.for_training(net(padding="same"), 190)
    assert (plan.input, plan.output, plan.halo) == (192, 192, 0)


def test_prediction_tile_of_the_paper_is_cut_to_the_grid():
    assert TilePlan.for_prediction(net(), 388) == TilePlan(input=572, output=384, halo=92,
                                                           offset=0, grid=16)


def test_same_padding_prediction_gets_context():
    plan = TilePlan.for_prediction(net(padding="same"), 192)
    assert plan == TilePlan(input=256, output=192, halo=SAME_CONTEXT, offset=SAME_CONTEXT,
                            grid=16)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [2, 3, 5])
@pytest.mark.parametrize("tile", [1, 7, 16, 100, 388])
def test_kept_output_lies_inside_the_network_output(depth, padding, tile):
    plan = TilePlan.for_prediction(net(depth, padding), tile)
    network_output = output_size(plan.input, depth=depth, padding=padding)
    assert plan.output >= plan.grid and plan.output % plan.grid == 0
    assert plan.offset + plan.output <= network_output
    # the kept output's first pixel sees `halo` input pixels before it
    assert plan.halo == (plan.input - network_output) // 2 + plan.offset


def test_tile_must_be_a_positive_integer():
    for bad in (0, -4, 2.5, True):
        with pytest.raises(InputError, match="tile must be a positive integer"):
            TilePlan.for_prediction(net(), bad)


def test_origins_and_default_tile(tiny_config):
    assert tile_origins(10, 4) == [0, 4, 8]
    assert tile_origins(8, 4) == [0, 4]
    assert tile_origins(3, 4) == [0]
    assert default_tile(tiny_config) == tiny_config.train.tile
