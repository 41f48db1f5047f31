"""Reference architectures export through the importer and run identically there."""

from __future__ import annotations

import math

import pytest
import torch

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import OpType, ReferenceNet, import_torch
from medyate_mcu.zoo import architectures


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so that folding is actually exercised."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@pytest.mark.parametrize(("name", "width", "resolution"),
                         [("mbv2", 1.0, 32), ("resnet8", 1.0, 32), ("mbv1", 1.0, 32),
                          ("mbv2", 0.5, 24), ("mbv1", 1.5, 40)])
def test_import_matches_torch(name: str, width: float, resolution: int) -> None:
    torch.manual_seed(0)
    model = architectures.create(name, num_classes=7, width=width, resolution=resolution)
    _randomise_batchnorm(model)
    model.eval()
    graph = import_torch(model, model.example_input())
    assert graph.input_shape == (3, resolution, resolution)
    assert graph.output_shape[-1] == 7
    assert graph.nodes_of(OpType.LINEAR)[-1] is graph.nodes[-1]  # classifier is the last node
    x = torch.randn(3, 3, resolution, resolution)
    with torch.no_grad():
        expected = model(x)
        got = ReferenceNet(graph)(x)
    assert torch.max(torch.abs(got - expected)).item() <= 1e-5


def test_demo_model_fits_the_device_budget() -> None:
    """mbv2 at width 1, 32×32: ≤ 100k parameters (float32 ≤ 400 kB of flash) and the largest
    activation at most 16×16×48 floats."""
    model = architectures.create("mbv2", num_classes=62)
    graph = import_torch(model, model.example_input())
    assert graph.parameter_count() <= 100_000
    assert 4 * graph.parameter_count() <= 400 * 1024
    largest = max(math.prod(shape) for shape in graph.shapes.values())
    assert largest <= 16 * 16 * 48
    assert graph.nodes_of(OpType.CONV)[0].conv.window.stride == (2, 2)


def test_width_scales_channels() -> None:
    small = architectures.parameter_count(architectures.create("resnet8", 10, width=0.5))
    large = architectures.parameter_count(architectures.create("resnet8", 10, width=1.0))
    assert 3 * small < large


def test_bad_arguments() -> None:
    with pytest.raises(MedyateError, match="unknown architecture 'vgg'"):
        architectures.create("vgg", 10)
    with pytest.raises(MedyateError, match="width"):
        architectures.create("mbv2", 10, width=0.0)
    with pytest.raises(MedyateError, match="at least 2 classes"):
        architectures.create("mbv1", 1)
