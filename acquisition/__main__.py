"""``python -m acquisition`` is the ``specklab`` command (before ``pip install -e .`` puts it on PATH)."""

import sys

from acquisition.cli import main

sys.exit(main())
