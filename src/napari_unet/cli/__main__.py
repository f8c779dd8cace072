"""``python -m napari_unet.cli``: the command line."""

import sys

from napari_unet.cli.main import main

sys.exit(main())
