"""Localisation networks of seed 000, trained on recorded runs and compared with the CRB.

``ARCHITECTURE_NAMES`` lives here, free of torch, so ``specklab --help`` and every other
subcommand start without importing torch (about a second); ``models.architectures`` maps
each name to its class.
"""

ARCHITECTURE_NAMES: tuple[str, ...] = ("cnn", "coordconv", "dense", "densenet")
