"""The command line: ``napari-unet`` (or ``python -m napari_unet.cli``)."""
