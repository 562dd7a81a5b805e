"""Simulated Vialux ALP-4.3 controller: a C library (``alp_sim.c``) built on first use.

The unmodified ALP4lib loads it as ``libalp43.so`` through ``libDir``; ``extras`` binds the
``SimAlp*`` symbols the virtual bench uses (clock, triggers, displayed picture).
"""

from devices.alp_sim.build import LIBRARY_NAME, AlpSimBuildError, build_dir, build_library
from devices.alp_sim.extras import SimAlpExtras

__all__ = ["LIBRARY_NAME", "AlpSimBuildError", "SimAlpExtras", "build_dir", "build_library"]
