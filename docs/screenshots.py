"""Regenerate the screenshots in docs/images/ (run under ``xvfb-run -a`` when headless).

Each picture is the whole napari window at 1400x900, as a user sees it.
"""

from pathlib import Path

from napari_unet._widgets.demo import build_demo_viewer, save_screenshot

IMAGES = Path(__file__).parent / "images"


def main() -> None:
    viewer = build_demo_viewer()
    print("saved", save_screenshot(viewer, IMAGES / "demo.png"))
    viewer.close()


if __name__ == "__main__":
    main()
