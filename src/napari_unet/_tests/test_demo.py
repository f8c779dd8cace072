"""The demo (`napari-unet demo`): its tabs, its picture, and the reader it makes napari use."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from napari.layers import Image, Labels
from napari.settings import NapariSettings
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QDockWidget, QTabBar

from napari_unet._widgets import augment_preview, demo, prediction

PLUGIN = "napari-unet-em"


def dock_tabs(viewer) -> QTabBar:
    """The tab bar of the docked widgets (napari's own tab bars are elsewhere)."""
    window = viewer.window._qt_window
    bars = [bar for bar in window.findChildren(QTabBar, options=Qt.FindChildOption.
                                               FindDirectChildrenOnly) if bar.isVisible()]
    assert len(bars) == 1
    return bars[0]


def picture(viewer) -> dict:
    """What the user sees of the demo: layers, selection, slice, camera, docks and tabs."""
    window = viewer.window._qt_window
    bar = dock_tabs(viewer)
    camera = viewer.scene.camera
    return {
        "layers": [(layer.name, layer.visible) for layer in viewer.layers],
        "active": viewer.layers.selection.active.name,
        "step": viewer.dims.current_step,
        "center": tuple(np.round(camera.center, 3)),
        "zoom": round(camera.zoom, 6),
        "docks": sorted((dock.windowTitle(), dock.geometry().getRect())
                        for dock in window.findChildren(QDockWidget)
                        if not dock.visibleRegion().isEmpty()),  # not the tabs behind
        "tabs": [bar.tabText(i) for i in range(bar.count())],
        "front tab": bar.tabText(bar.currentIndex()),
    }


def samples_shown(viewer) -> bool:
    """Whether the Augmentation preview has drawn its samples (in the background)."""
    previews = viewer.window.dock_widgets["Augmentation preview (napari-unet-em)"]
    layers = previews.layers.values()
    return not previews.busy and all(layer in viewer.layers for layer in layers)


def start_demo(make_napari_viewer, size=(1400, 900), *, qtbot=None):
    """Start the demo as `open_demo` does; with ``qtbot``, look at it until the augmented
    samples are drawn, should the demo not have waited for them."""
    viewer = make_napari_viewer(show=True)
    demo.dock_demo(viewer)
    viewer.window.resize(*size)
    assert demo.settle(viewer, timeout=180)
    demo.show_first_look(viewer)
    if qtbot is not None:
        qtbot.waitUntil(lambda: samples_shown(viewer), timeout=120_000)
        qtbot.wait(200)
    return viewer


@pytest.mark.parametrize("size", [(1400, 900), (1280, 800)])
def test_demo_tabs_show_whole_titles(make_napari_viewer, size):
    viewer = start_demo(make_napari_viewer, size)
    bar = dock_tabs(viewer)
    assert [bar.tabText(i) for i in range(bar.count())] == list(demo.TABS.values())
    metrics = bar.fontMetrics()
    for i in range(bar.count()):
        text = bar.tabText(i)
        assert bar.tabRect(i).width() >= metrics.horizontalAdvance(text), f"tab {text!r} is cut"
    assert bar.tabRect(bar.count() - 1).right() <= bar.width()
    # The dock's title bar still names the widget in full.
    assert "Weight map preview (napari-unet-em)" in viewer.window.dock_widgets


def test_demo_first_look_is_the_same_on_every_run(make_napari_viewer, monkeypatch, qtbot):
    first = picture(start_demo(make_napari_viewer, qtbot=qtbot))
    # Again, with the augmented samples arriving seconds after the first look (as on a slow
    # first run): they used to land on top of it, visible and selected.
    predicted, predict, draw = threading.Event(), prediction.prediction_job, \
        augment_preview.augment_samples

    def first_look(*args, **kwargs):
        result = yield from predict(*args, **kwargs)
        predicted.set()
        return result

    def late_samples(*args, **kwargs):
        predicted.wait(timeout=120)
        time.sleep(2.0)
        return (yield from draw(*args, **kwargs))

    monkeypatch.setattr(prediction, "prediction_job", first_look)
    monkeypatch.setattr(augment_preview, "augment_samples", late_samples)
    viewer = start_demo(make_napari_viewer, qtbot=qtbot)
    assert predicted.is_set()
    assert picture(viewer) == first
    names = [name for name, _ in first["layers"]]
    assert names[:2] == ["ISBI 2012 EM", "ISBI 2012 labels"]
    assert names[-3:] == ["membrane probability", "membrane uncertainty", "membrane mask"]
    assert first["active"] == "membrane mask"
    hidden = {name for name, visible in first["layers"] if not visible}
    assert hidden == {"weight map", "augmented image", "augmented labels", "augmented weights",
                      "membrane uncertainty"}
    assert first["step"][0] == 14 and first["front tab"] == "Training"
    # The view is fitted to the sample in the final window.
    viewer.reset_view(layers=[viewer.layers["ISBI 2012 EM"]])
    assert (picture(viewer)["center"], picture(viewer)["zoom"]) == (first["center"], first["zoom"])


@pytest.fixture
def settings(monkeypatch):
    """napari settings of this test only (never written to disk)."""
    from napari import settings as napari_settings

    own = NapariSettings(config_path=None)
    monkeypatch.setattr(napari_settings, "_SETTINGS", own)
    return own


@pytest.fixture
def tiffs(tmp_path):
    labels = np.where(np.eye(16, dtype=bool), 0, 255).astype(np.uint8)  # ISBI convention
    em = np.random.default_rng(0).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "train-labels.tif", labels)
    tifffile.imwrite(tmp_path / "EM.TIF", em, photometric="minisblack")
    return tmp_path / "train-labels.tif", tmp_path / "EM.TIF"


def test_demo_makes_the_plugin_the_tif_reader(make_napari_viewer, settings, tiffs):
    from napari.errors import MultipleReaderError

    viewer = make_napari_viewer()
    labels, em = tiffs
    # plugin=None is File > Open: napari resolves the reader (in the GUI it asks on this error)
    with pytest.raises(MultipleReaderError):
        viewer.open(labels, plugin=None)
    assert demo.prefer_plugin_reader() == ["*.tif", "*.tiff", "*.TIF", "*.TIFF"]
    assert settings.plugins.extension2reader["*.tiff"] == PLUGIN
    (layer,) = viewer.open(labels, plugin=None)
    assert isinstance(layer, Labels) and set(np.unique(layer.data)) == {1, 2}
    (layer,) = viewer.open(em, plugin=None)
    (builtin,) = viewer.open(em, plugin="napari")  # what the user would get otherwise
    assert isinstance(layer, Image) and isinstance(builtin, Image)
    np.testing.assert_array_equal(layer.data, builtin.data)
    assert layer.data.shape == (5, 16, 16)
    assert demo.prefer_plugin_reader() == []


def test_demo_keeps_the_users_reader(make_napari_viewer, settings, tiffs):
    settings.plugins.extension2reader = {"*.tif": "napari", "*.czi": "other"}
    viewer = make_napari_viewer()
    assert demo.prefer_plugin_reader() == []
    assert settings.plugins.extension2reader == {"*.tif": "napari", "*.czi": "other"}
    (layer,) = viewer.open(tiffs[0], plugin=None)
    assert isinstance(layer, Image)  # napari's builtin reader, as the user chose


def test_demo_command_saves_screenshot_and_sets_the_reader(tmp_path):
    shot, config = tmp_path / "demo.png", tmp_path / "napari" / "settings.yaml"
    script = Path(sys.executable).parent / "napari-unet"
    out = subprocess.run([str(script), "demo", "--screenshot", str(shot)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "NAPARI_CONFIG": str(config)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "opens .tif and .tiff files with napari-unet" in out.stdout
    readers = yaml.safe_load(config.read_text())["plugins"]["extension2reader"]
    assert readers == dict.fromkeys(["*.tif", "*.tiff", "*.TIF", "*.TIFF"], PLUGIN)
    from imageio.v3 import imread

    picture = imread(shot)
    assert picture.shape[0] >= 800 and picture.shape[1] >= 1300
    assert picture[..., :3].std() > 10  # a real window, not a blank frame
