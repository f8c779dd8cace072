import shutil
import subprocess
import sys
from pathlib import Path

import npe2


def test_npe2_validate_with_imports():
    npe2_cli = Path(sys.executable).parent / "npe2"
    command = [str(npe2_cli) if npe2_cli.exists() else shutil.which("npe2"), "validate",
               "napari-unet-em", "--imports"]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout.lower()


def test_manifest_contributions():
    manifest = npe2.PluginManifest.from_distribution("napari-unet-em")
    contributions = manifest.contributions
    assert [s.display_name for s in contributions.sample_data] == ["ISBI 2012 EM (30 slices)"]
    assert [w.layer_types for w in contributions.writers] == [["labels"], ["image"]]
    assert {r.command for r in contributions.readers} == {"napari-unet-em.get_reader"}
    assert [w.display_name for w in contributions.widgets] == [
        "Data", "Weight map preview", "Augmentation preview", "Training", "Prediction",
        "Correct and retrain", "Export"]
