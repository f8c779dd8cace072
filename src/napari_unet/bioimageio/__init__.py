"""bioimage.io model packages of napari-unet models.

`export` writes them, `card` their documentation and cover, `check` runs
bioimageio.core's own test on them, offline.
"""

DEFAULT_TAGS = ("unet", "2d", "pytorch", "electron-microscopy", "membrane",
                "semantic-segmentation", "napari-unet")
"""Tags every package gets (the command line's help names them without loading torch)."""
DEFAULT_LICENSE = "CC-BY-4.0"
DEFAULT_DESCRIPTION = ("U-Net (Ronneberger et al. 2015) that segments cell membranes in 2D "
                       "electron-microscopy slices; trained with napari-unet.")
