"""Suite-wide settings: headless Qt and matplotlib, so every test runs on a machine without a screen."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")
