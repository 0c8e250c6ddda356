"""``python -m swin_fused ...``: the ``swin-fused`` command (see :mod:`swin_fused.tools.cli`)."""
import sys

from .tools.cli import main

sys.exit(main())
