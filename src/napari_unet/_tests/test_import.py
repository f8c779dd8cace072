import json
import pkgutil
import subprocess
import sys

import napari_unet

GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt",
                "vispy", "pyqtgraph")


def core_modules():
    names = [m.name for m in pkgutil.walk_packages(napari_unet.__path__, "napari_unet.")]
    return [n for n in names if not n.startswith(("napari_unet._widgets", "napari_unet._tests"))
            and not n.endswith(".__main__")]  # those run the command line


def test_core_modules_are_found():
    modules = core_modules()
    expected = {"napari_unet.io.labels", "napari_unet.io.stacks", "napari_unet.cli.main"}
    assert expected <= set(modules)


def test_core_imports_no_gui():
    code = (
        "import importlib, json, sys\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "import napari_unet\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(GUI_PACKAGES), loaded & set(GUI_PACKAGES)


def test_import_is_lazy_about_torch():
    code = "import sys, napari_unet; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_loads_no_augmentation_library_or_torch():
    # configs are read by every front before any job: they stay light
    code = ("import sys, napari_unet.config; "
            "print(sorted(m for m in ('albumentations', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
