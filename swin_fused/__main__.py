"""``python -m swin_fused ...``: the ``swin-fused`` command (see :mod:`swin_fused.cli`)."""
import sys

from .cli import main

sys.exit(main())
