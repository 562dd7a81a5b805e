"""Suite-wide settings: headless Qt and matplotlib, so every test runs on a machine without a screen."""

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models run slower with several threads on a shared 2-core CI box: use one, then restore."""
    import torch  # here, not at module level: most of the suite never needs torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
