"""Localisation networks with a softmax-expectation head (seed 000, "ANN structure and optimization").

Every network maps a (B, 1, 32, 32) frame to ``2 * n_classes`` logits: the first ``n_classes`` are the
x (column) classes, the last ``n_classes`` the y (row) classes.  A softmax per axis turns them into a
probability distribution over the class grid, the training loss is the categorical cross-entropy of
each axis, and the position estimate is the *expected value* of each distribution (in class units;
:class:`models.data.ClassGrid` converts class units to µm).  The expectation rather than the arg-max is
what makes sub-class precision, and hence a comparison with the Cramér–Rao bound, possible.

Four families are provided, with default widths chosen so that their parameter counts are within a
factor 1.5 of each other (the paper sized its grid-search spaces for similar maximal parameter counts,
so that architecture, not capacity, is what is compared):

* :class:`CNN`: conv blocks + max-pooling + a fully connected head;
* :class:`CoordConv`: the same, with x/y coordinate channels concatenated to the input and, with
  ``coord_layers="all"``, to every convolution (Liu et al. 2018) to break translation invariance;
* :class:`DenseNetwork`: a fully connected network on the flattened frame;
* :class:`DenseNetCNN`: a densely connected CNN (DenseNet blocks with bottleneck-free 3x3 layers and
  1x1 transitions, Huang et al. 2017).

:func:`grid_search` runs a user-supplied objective over :data:`HYPERPARAMETER_GRIDS`; training-based
objectives live in :mod:`models.train` so that this module stays free of I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 32
DEFAULT_N_CLASSES = 81

__all__ = [
    "ARCHITECTURES",
    "CNN",
    "CoordConv",
    "DenseNetCNN",
    "DenseNetwork",
    "GridResult",
    "HYPERPARAMETER_GRIDS",
    "build_model",
    "count_parameters",
    "expected_class",
    "grid_search",
    "iter_grid",
    "localisation_loss",
    "parameter_counts",
    "split_logits",
]


# ---------------------------------------------------------------------------------------------------
# Head: softmax per axis, cross-entropy, expected value
# ---------------------------------------------------------------------------------------------------


def split_logits(logits: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(B, 2*n_classes)`` logits into the x and y halves (each ``(B, n_classes)``)."""
    if logits.shape[-1] != 2 * n_classes:
        raise ValueError(f"expected {2 * n_classes} logits, got {logits.shape[-1]}")
    return logits[..., :n_classes], logits[..., n_classes:]


def expected_class(logits: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Expected class index per axis, ``(B, 2)`` as (x, y), from the per-axis softmax.

    Returned in class-index units (0 … n_classes-1, fractional); the expectation is what gives
    sub-class resolution.
    """
    lx, ly = split_logits(logits, n_classes)
    k = torch.arange(n_classes, device=logits.device, dtype=logits.dtype)
    ex = (F.softmax(lx, dim=-1) * k).sum(-1)
    ey = (F.softmax(ly, dim=-1) * k).sum(-1)
    return torch.stack([ex, ey], dim=-1)


def localisation_loss(logits: torch.Tensor, target_class: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Categorical cross-entropy of the x and y one-hot targets, summed over axes, mean over batch.

    ``target_class`` is ``(B, 2)`` long (x class, y class); equivalent to the paper's ``2*N_h``
    one-hot vector with a softmax per half.
    """
    lx, ly = split_logits(logits, n_classes)
    return F.cross_entropy(lx, target_class[:, 0]) + F.cross_entropy(ly, target_class[:, 1])


# ---------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------


class AddCoords(nn.Module):
    """Concatenate x and y coordinate channels in [-1, 1] (and optionally the radius) to a feature map.

    The coordinates are built per spatial size, device and dtype on first use and cached (not state-dict
    buffers), so the module works at any depth.
    """

    def __init__(self, with_r: bool = False) -> None:
        super().__init__()
        self.with_r = with_r
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def extra_channels(self) -> int:
        return 3 if self.with_r else 2

    def _coords(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w, device, dtype)
        if key not in self._cache:
            yy, xx = torch.meshgrid(
                torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype),
                torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype),
                indexing="ij",
            )
            chans = [xx, yy]
            if self.with_r:
                chans.append(torch.sqrt(xx**2 + yy**2))
            self._cache[key] = torch.stack(chans)[None]
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self._coords(h, w, x.device, x.dtype).expand(b, -1, -1, -1)
        return torch.cat([x, c], dim=1)


def _conv_bn_relu(cin: int, cout: int, kernel: int, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _dense_bn_relu(nin: int, nout: int, dropout: float) -> list[nn.Module]:
    """Linear -> BatchNorm1d -> ReLU (-> Dropout): a hidden fully connected layer that cannot die.

    Without the BatchNorm a hidden ReLU layer can die as a whole: at b = 5 (an 11 %-contrast blob in
    speckle) Adam drove every pre-activation of CoordConv's 256 head units negative, in the first epoch of a
    10,800-frame run (seed 1), the output became a constant equal to the uniform prior and no gradient
    reached the features again (held-out error flat at the prior's 181 um^2).  Normalised
    pre-activations keep about half of each unit's inputs active, so a weak signal is still learnt.
    """
    layers: list[nn.Module] = [nn.Linear(nin, nout, bias=False), nn.BatchNorm1d(nout), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def _head(in_features: int, hidden: int, n_classes: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    if hidden > 0:
        layers += _dense_bn_relu(in_features, hidden, dropout)
        layers.append(nn.Linear(hidden, 2 * n_classes))
    else:
        layers.append(nn.Linear(in_features, 2 * n_classes))
    return nn.Sequential(*layers)


class Localiser(nn.Module):
    """Base class: ``n_classes``, the input normalisation and the expectation helper of all architectures.

    ``input_norm`` (a one-channel BatchNorm) standardises the frames with statistics learnt over the
    training set before anything else sees them.  The paper's per-frame max normalisation (kept as the
    preprocessing shared with the CRB analysis) leaves background-subtracted speckle frames with a pixel
    standard deviation of ~0.15, small next to CoordConv's [-1, 1] coordinate channels: at b = 2.5 on a
    24,000-frame run the first convolutions saw mostly coordinates, the outputs stopped depending on the
    input within 60 Adam steps and the loss stayed at the uniform guess (2 ln 81) for 20 epochs, while the
    same network with its input standardised learnt at once.  A learnt affine map of the input loses no
    information and makes training independent of the preprocessing's overall scale.
    """

    n_classes: int

    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1)

    def predict_class(self, x: torch.Tensor) -> torch.Tensor:
        """Expected class per axis ``(B, 2)`` (x, y) in class-index units."""
        return expected_class(self(x), self.n_classes)


# ---------------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------------


class CNN(Localiser):
    """Plain CNN: ``len(channels)`` stages of two 3x3 convs + 2x2 max-pool, then a dense head.

    The flatten (not global pooling) keeps some position information, yet convolutions are translation
    equivariant so the network must infer absolute position from border effects, the reason the paper
    finds CNN biases larger than CoordConv's.
    """

    def __init__(
        self,
        n_classes: int = DEFAULT_N_CLASSES,
        channels: Sequence[int] = (16, 32, 64),
        kernel: int = 3,
        hidden: int = 256,
        dropout: float = 0.0,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.features = self._make_features(channels, kernel, batchnorm)
        size = INPUT_SIZE // 2 ** len(channels)
        self.head = _head(channels[-1] * size * size, hidden, n_classes, dropout)

    def _make_features(self, channels: Sequence[int], kernel: int, batchnorm: bool) -> nn.Sequential:
        layers: list[nn.Module] = []
        cin = 1
        for c in channels:
            layers += _conv_bn_relu(cin, c, kernel, batchnorm)
            layers += _conv_bn_relu(c, c, kernel, batchnorm)
            layers.append(nn.MaxPool2d(2))
            cin = c
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.input_norm(x)))


class CoordConv(Localiser):
    """CNN whose convolutions see coordinate channels.

    ``coord_layers="input"`` adds x/y channels to the input only; ``"all"`` adds them before every
    convolution (deeper layers then keep absolute position after pooling).
    """

    def __init__(
        self,
        n_classes: int = DEFAULT_N_CLASSES,
        channels: Sequence[int] = (16, 32, 64),
        kernel: int = 3,
        hidden: int = 256,
        dropout: float = 0.0,
        batchnorm: bool = True,
        coord_layers: Literal["input", "all"] = "all",
        with_r: bool = False,
    ) -> None:
        super().__init__()
        if coord_layers not in ("input", "all"):
            raise ValueError("coord_layers must be 'input' or 'all'")
        self.n_classes = n_classes
        self.coord_layers = coord_layers
        self.add_coords = AddCoords(with_r=with_r)
        extra = self.add_coords.extra_channels
        self.convs = nn.ModuleList()
        self.pools = nn.ModuleList()
        cin = 1
        for i, c in enumerate(channels):
            stage = nn.ModuleList()
            for j in range(2):
                first = j == 0
                n_in = (cin if first else c) + (extra if (coord_layers == "all" or (i == 0 and first)) else 0)
                stage.append(nn.Sequential(*_conv_bn_relu(n_in, c, kernel, batchnorm)))
            self.convs.append(stage)
            self.pools.append(nn.MaxPool2d(2))
            cin = c
        size = INPUT_SIZE // 2 ** len(channels)
        self.head = _head(channels[-1] * size * size, hidden, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x)
        for i, (stage, pool) in enumerate(zip(self.convs, self.pools, strict=True)):
            for j, conv in enumerate(stage):
                if self.coord_layers == "all" or (i == 0 and j == 0):
                    x = self.add_coords(x)
                x = conv(x)
            x = pool(x)
        return self.head(x)


class DenseNetwork(Localiser):
    """Fully connected network on the flattened 32x32 frame (the paper's "dense" network)."""

    def __init__(
        self,
        n_classes: int = DEFAULT_N_CLASSES,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        layers: list[nn.Module] = [nn.Flatten()]
        nin = INPUT_SIZE * INPUT_SIZE
        for h in hidden:
            layers += _dense_bn_relu(nin, h, dropout)
            nin = h
        layers.append(nn.Linear(nin, 2 * n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


class _DenseLayer(nn.Module):
    """BN-ReLU-Conv3x3 producing ``growth`` channels that are concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class DenseNetCNN(Localiser):
    """Densely connected CNN: stem conv, ``len(block_layers)`` dense blocks with 1x1 transitions + pool.

    Each transition halves the spatial size and compresses the channels by ``compression``; the last
    feature map goes through a 1x1 conv to ``out_channels`` before the dense head so the head size (and
    so the parameter count) is comparable to the CNN's.
    """

    def __init__(
        self,
        n_classes: int = DEFAULT_N_CLASSES,
        stem: int = 24,
        growth: int = 12,
        block_layers: Sequence[int] = (4, 4, 4),
        compression: float = 0.5,
        out_channels: int = 64,
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, padding=1, bias=False)]
        c = stem
        for i, n in enumerate(block_layers):
            for _ in range(n):
                layers.append(_DenseLayer(c, growth))
                c += growth
            cout = out_channels if i == len(block_layers) - 1 else max(1, int(c * compression))
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, cout, 1, bias=False)]
            layers.append(nn.AvgPool2d(2))
            c = cout
        self.features = nn.Sequential(*layers)
        size = INPUT_SIZE // 2 ** len(block_layers)
        self.head = _head(c * size * size, hidden, n_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.input_norm(x)))


ARCHITECTURES: dict[str, type[Localiser]] = {
    "cnn": CNN,
    "coordconv": CoordConv,
    "dense": DenseNetwork,
    "densenet": DenseNetCNN,
}


def build_model(arch: str, n_classes: int = DEFAULT_N_CLASSES, **kwargs: Any) -> Localiser:
    """Instantiate architecture ``arch`` (a key of :data:`ARCHITECTURES`) with constructor ``kwargs``.

    Sequence-valued kwargs may come from JSON as lists; they are passed through unchanged.
    """
    try:
        cls = ARCHITECTURES[arch]
    except KeyError as exc:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}") from exc
    try:
        return cls(n_classes=n_classes, **kwargs)
    except TypeError as exc:  # an unknown argument, or a value of the wrong type (``--model-arg``)
        raise ValueError(f"bad {arch} constructor arguments {kwargs}: {exc}") from exc


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_counts(n_classes: int = DEFAULT_N_CLASSES) -> dict[str, int]:
    """Trainable parameter count of every architecture at its default size (for docs and tests)."""
    return {name: count_parameters(build_model(name, n_classes)) for name in ARCHITECTURES}


# ---------------------------------------------------------------------------------------------------
# Hyper-parameter grids and grid search
# ---------------------------------------------------------------------------------------------------

#: Small per-architecture search spaces.  ``lr`` and ``batch_size`` are training options; every other
#: key is a constructor argument.  The widths are chosen so the largest model of each grid has a
#: similar parameter count (~0.4-0.6 M), as in the paper's search design.
HYPERPARAMETER_GRIDS: dict[str, dict[str, list[Any]]] = {
    "cnn": {"lr": [1e-3, 3e-4], "channels": [(16, 32, 64), (24, 48, 64)], "hidden": [128, 256]},
    "coordconv": {
        "lr": [1e-3, 3e-4],
        "channels": [(16, 32, 64), (24, 48, 64)],
        "hidden": [128, 256],
        "coord_layers": ["input", "all"],
    },
    "dense": {"lr": [1e-3, 3e-4], "hidden": [(256, 256), (384,), (256, 128, 128)], "dropout": [0.0, 0.2]},
    "densenet": {"lr": [1e-3, 3e-4], "growth": [8, 12], "block_layers": [(3, 3, 3), (4, 4, 4)]},
}

TRAINING_KEYS = frozenset({"lr", "batch_size", "epochs"})


def iter_grid(grid: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """All combinations of a ``{name: [values]}`` grid, in a stable (sorted-key) order."""
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


@dataclass
class GridResult:
    """One evaluated grid point: the configuration, its parameter count and the objective's metrics."""

    config: dict[str, Any]
    n_parameters: int
    score: float
    metrics: dict[str, Any] = field(default_factory=dict)


def grid_search(
    arch: str,
    objective: Callable[[dict[str, Any]], dict[str, Any] | float],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    n_classes: int = DEFAULT_N_CLASSES,
    max_parameters: int | None = None,
) -> list[GridResult]:
    """Evaluate ``objective`` on every grid point of ``arch`` and return results, best (lowest) first.

    ``objective(config)`` trains/evaluates one configuration and returns either a float score or a dict
    with a ``"score"`` key (the paper selects on the mean squared error, σ² + bias²).  Points whose model
    exceeds ``max_parameters`` are skipped, which is how the search spaces are kept comparable across
    architectures.
    """
    grid = HYPERPARAMETER_GRIDS[arch] if grid is None else grid
    results: list[GridResult] = []
    for config in iter_grid(grid):
        model_kwargs = {k: v for k, v in config.items() if k not in TRAINING_KEYS}
        n_params = count_parameters(build_model(arch, n_classes, **model_kwargs))
        if max_parameters is not None and n_params > max_parameters:
            continue
        out = objective(dict(config))
        metrics = dict(out) if isinstance(out, Mapping) else {"score": float(out)}
        results.append(GridResult(dict(config), n_params, float(metrics["score"]), metrics))
    results.sort(key=lambda r: r.score)
    return results
