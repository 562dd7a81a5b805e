"""Localisation networks of seed 000, trained on recorded runs and compared with the CRB.

``ARCHITECTURE_NAMES`` and the calibration lattice's defaults live here, free of torch, so
``specklab --help`` and every other subcommand start without importing torch (about a second);
``models.architectures`` maps each name to its class, ``models.data`` builds the lattice.
"""

ARCHITECTURE_NAMES: tuple[str, ...] = ("cnn", "coordconv", "dense", "densenet")
LATTICE_SIDE = 9  # calibration lattice points per axis (D range plus one step each side)
LATTICE_MAX_FRAMES = 500  # held-out frames per lattice point, at most
