"""Localiser architectures: shapes, comparable sizes, the softmax-expectation head, grid search."""

from __future__ import annotations

import pytest
import torch

from models.architectures import (
    ARCHITECTURES,
    HYPERPARAMETER_GRIDS,
    AddCoords,
    CoordConv,
    build_model,
    count_parameters,
    expected_class,
    grid_search,
    iter_grid,
    localisation_loss,
    parameter_counts,
)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_classes", [81, 21])
def test_output_shape_is_two_n_h_logits(arch: str, n_classes: int) -> None:
    model = build_model(arch, n_classes).eval()
    with torch.no_grad():
        out = model(torch.rand(3, 1, 32, 32))
    assert out.shape == (3, 2 * n_classes)
    k = model.predict_class(torch.rand(2, 1, 32, 32))
    assert k.shape == (2, 2)
    assert bool(((k >= 0) & (k <= n_classes - 1)).all())


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_input_is_standardised_so_the_preprocessing_scale_does_not_matter(arch: str) -> None:
    """Max-normalised speckle frames have a pixel std of ~0.15: the network must not depend on that scale.

    In training mode the input BatchNorm maps a batch and any affine copy of it (a x + c, a > 0) to the
    same standardised input, so the outputs agree; without it CoordConv's coordinate channels swamp a
    weak input and training collapsed to the uniform guess on a b = 2.5 run.
    """
    torch.manual_seed(0)
    model = build_model(arch).train()
    x = torch.rand(16, 1, 32, 32)
    with torch.no_grad():
        a = model(x)
        b = model(0.2 * x + 0.3)
    # equal up to BatchNorm's eps (1e-5 against a batch variance of 0.2² / 12 = 3e-3: ~0.2 %)
    assert torch.allclose(a, b, atol=5e-3), float((a - b).abs().max())
    assert isinstance(model.input_norm, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_hidden_dense_layers_cannot_die(arch: str) -> None:
    """A step that drives every hidden pre-activation negative must not make the output constant.

    Without BatchNorm before the ReLU such a step kills the whole layer: the output is the last bias for
    every frame and no gradient reaches the features again (CoordConv at b = 5, seed 1: the uniform guess
    for 30 epochs).  Here the first hidden layer's weights are set so that every pre-activation is
    negative for every positive input; with the BatchNorm the units still respond to the input.
    """
    torch.manual_seed(0)
    model = build_model(arch).train()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first.weight.copy_(-first.weight.abs() - 0.01)
        x = torch.rand(32, 1, 32, 32)
        out = model(x)
    assert out.std(dim=0).min() > 1e-3, "output no longer depends on the input"
    hidden = first.out_features
    assert any(isinstance(m, torch.nn.BatchNorm1d) and m.num_features == hidden for m in model.modules())


def test_default_parameter_counts_are_comparable() -> None:
    counts = parameter_counts()
    assert set(counts) == {"cnn", "coordconv", "dense", "densenet"}
    assert max(counts.values()) / min(counts.values()) < 1.5, counts
    assert all(c > 50_000 for c in counts.values())


def test_grid_points_build_and_stay_comparable() -> None:
    biggest = {}
    for arch, grid in HYPERPARAMETER_GRIDS.items():
        sizes = []
        for point in iter_grid(grid):
            kwargs = {k: v for k, v in point.items() if k not in ("lr", "batch_size", "epochs")}
            sizes.append(count_parameters(build_model(arch, **kwargs)))
        biggest[arch] = max(sizes)
    assert max(biggest.values()) / min(biggest.values()) < 1.5, biggest


def test_expected_value_of_one_hot_logits_is_the_class() -> None:
    n = 81
    logits = torch.full((2, 2 * n), -1e4)
    logits[0, 17] = 0.0  # x class 17
    logits[0, n + 60] = 0.0  # y class 60
    logits[1, 0] = 0.0
    logits[1, n + n - 1] = 0.0
    k = expected_class(logits, n)
    torch.testing.assert_close(k, torch.tensor([[17.0, 60.0], [0.0, 80.0]]))


def test_expected_value_interpolates_between_classes() -> None:
    n = 11
    logits = torch.full((1, 2 * n), -1e4)
    logits[0, 3] = logits[0, 4] = 0.0  # x: half 3, half 4
    logits[0, n:] = 0.0  # y: uniform -> centre
    torch.testing.assert_close(expected_class(logits, n), torch.tensor([[3.5, 5.0]]))


def test_loss_is_sum_of_per_axis_cross_entropies() -> None:
    n = 5
    logits = torch.zeros(1, 2 * n)
    target = torch.tensor([[1, 3]])
    assert float(localisation_loss(logits, target, n)) == pytest.approx(
        2 * torch.log(torch.tensor(5.0)).item()
    )
    logits[0, 1] = logits[0, n + 3] = 50.0
    assert float(localisation_loss(logits, target, n)) < 1e-6


def test_coordconv_coordinate_channels_and_variants() -> None:
    c = AddCoords()(torch.zeros(2, 3, 4, 6))
    assert c.shape == (2, 5, 4, 6)
    torch.testing.assert_close(c[0, 3, 0], torch.linspace(-1, 1, 6))  # x varies along columns
    torch.testing.assert_close(c[0, 4, :, 0], torch.linspace(-1, 1, 4))  # y along rows
    every = CoordConv(coord_layers="all").eval()
    first = CoordConv(coord_layers="input").eval()
    assert count_parameters(every) > count_parameters(first)
    assert every(torch.rand(1, 1, 32, 32)).shape == first(torch.rand(1, 1, 32, 32)).shape
    with pytest.raises(ValueError):
        CoordConv(coord_layers="some")


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet")


def test_grid_search_sorts_by_score_and_skips_oversized_models() -> None:
    grid = {"lr": [1e-3, 1e-4], "hidden": [(32,), (256, 256)]}
    seen = []

    def objective(cfg: dict) -> dict:
        seen.append(cfg)
        return {"score": cfg["lr"] * 1e4 + len(cfg["hidden"])}

    res = grid_search("dense", objective, grid)
    assert len(res) == 4
    assert [r.score for r in res] == sorted(r.score for r in res)
    assert res[0].config == {"hidden": (32,), "lr": 1e-4}
    small = count_parameters(build_model("dense", hidden=(32,)))
    limited = grid_search("dense", lambda cfg: 1.0, grid, max_parameters=small)
    assert len(limited) == 2 and all(r.n_parameters == small for r in limited)


def test_torch_free_architecture_names_match_the_classes() -> None:
    from models import ARCHITECTURE_NAMES
    from models.architectures import ARCHITECTURES

    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES


def test_cli_parser_builds_without_importing_torch() -> None:
    import subprocess
    import sys

    code = "import sys, acquisition.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_coordconv_with_input_coordinates_and_a_one_channel_stage_builds_and_runs() -> None:
    """Only the first convolution gets coordinates with ``coord_layers="input"``, whatever the widths."""
    model = CoordConv(n_classes=5, channels=(4, 1, 8), hidden=8, coord_layers="input").eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 32, 32)).shape == (2, 10)


def test_bad_constructor_arguments_are_a_value_error() -> None:
    """``--model-arg`` mistakes reach the CLI as ValueError (exit 2), not a TypeError traceback."""
    with pytest.raises(ValueError, match="bogus"):
        build_model("dense", 5, bogus=1)
    with pytest.raises(ValueError, match="bad dense constructor arguments"):
        build_model("dense", 5, hidden="abc")
