"""``python -m napari_unet``: the command line (what ``torchrun -m napari_unet`` starts)."""

import sys

from napari_unet.cli.main import main

sys.exit(main())
