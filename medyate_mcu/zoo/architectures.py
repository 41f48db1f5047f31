"""Reference architectures of the panel, in PyTorch, all exportable through the importer.

- ``mbv2``: MCUNet / MobileNetV2-style inverted residuals (the default demo model).
- ``resnet8``: the ResNet-8 of MLPerf Tiny image classification.
- ``mbv1``: MobileNetV1-style depthwise-separable convolutions.
- ``mobilenetv2``: the standard MobileNetV2 (the paper-scale model, e.g. width 0.35 at 128 px).
- ``ds-cnn``: the keyword-spotting DS-CNN of "Hello Edge" (small), on 1×49×10 MFCCs.

``width`` scales every channel count (rounded to a multiple of 8; ``mobilenetv2`` rounds like the
reference MobileNetV2, see :func:`_divisible`); ``resolution`` is the input side
the model is built, exported and sized for (the layers themselves accept any side ≥ 16). Every
model ends in global average pooling and a ``classifier`` ``nn.Linear``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medyate_mcu.errors import MedyateError


def _channels(base: int, width: float) -> int:
    """``base · width`` rounded to a multiple of 8, at least 8."""
    return max(8, int(base * width + 4) // 8 * 8)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class _Classifier(nn.Module):
    """Shared tail: a feature extractor, global average pooling, a linear classifier."""

    features: nn.Module
    classifier: nn.Linear
    resolution: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))

    def example_input(self) -> torch.Tensor:
        """A batch of one input of the built resolution."""
        return torch.zeros(1, 3, self.resolution, self.resolution)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise, 1×1 linear projection; residual when the
    shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   _conv_bn(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2Tiny(_Classifier):
    """MCUNet-style inverted-residual net. At width 1, 32×32 input: a stride-2 stem to 16×16, the
    largest activation 16×16×48, about 62k parameters with 62 classes."""

    # (expansion, output channels, repeats, first stride)
    STAGES = ((3, 24, 1, 2), (4, 24, 1, 1), (4, 40, 2, 2), (4, 64, 1, 1))

    def __init__(self, num_classes: int, width: float = 1.0, resolution: int = 32) -> None:
        super().__init__()
        self.resolution = resolution
        cin = _channels(16, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2)]
        for expand, base, repeats, stride in self.STAGES:
            cout = _channels(base, width)
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        head = _channels(128, width)
        layers.append(_conv_bn(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head, num_classes)


def _divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (halves up), at least ``divisor``,
    raised by one ``divisor`` if rounding lost more than 10 % of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class MobileNetV2(_Classifier):
    """The standard MobileNetV2: a 3×3 stride-2 stem of 32·w channels, seven stages of inverted
    residuals, a 1×1 conv to 1280·max(1, w) channels, ReLU6 throughout. At width 0.35, 128×128
    input and 10 classes: 401,898 parameters after BatchNorm folding."""

    # (expansion t, output channels c, repeats n, first stride s)
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int, width: float = 1.0, resolution: int = 224) -> None:
        super().__init__()
        self.resolution = resolution
        cin = _divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2)]
        for expand, base, repeats, stride in self.STAGES:
            cout = _divisible(base * width)
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        head = _divisible(1280 * max(1.0, width))
        layers.append(_conv_bn(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs, a 1×1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet8(_Classifier):
    """MLPerf Tiny ResNet-8: a 3×3 stem and three residual stages of 16, 32, 64 channels
    (about 78k parameters at width 1 with 10 classes)."""

    def __init__(self, num_classes: int, width: float = 1.0, resolution: int = 32) -> None:
        super().__init__()
        self.resolution = resolution
        c1, c2, c3 = (_channels(c, width) for c in (16, 32, 64))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),
            BasicBlock(c1, c1, 1), BasicBlock(c1, c2, 2), BasicBlock(c2, c3, 2))
        self.classifier = nn.Linear(c3, num_classes)


class MobileNetV1Tiny(_Classifier):
    """MobileNetV1-style net: a stride-2 stem, then depthwise 3×3 + pointwise 1×1 pairs."""

    # (output channels, stride) of each depthwise-separable pair
    PAIRS = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (128, 1))

    def __init__(self, num_classes: int, width: float = 1.0, resolution: int = 32) -> None:
        super().__init__()
        self.resolution = resolution
        cin = _channels(16, width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2)]
        for base, stride in self.PAIRS:
            cout = _channels(base, width)
            layers += [_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)


class DSCNN(_Classifier):
    """DS-CNN (Zhang et al., "Hello Edge", small) on one channel of ``resolution`` MFCC frames ×
    10 coefficients: a 10×4 stride-2 stem ("same" output size: 49×10 -> 25×5, padded by 5 rows
    and 1 column each side, of which the last padded row is never read), then four depthwise
    3×3 + pointwise 1×1 pairs, BatchNorm and ReLU after every convolution, 64·width channels."""

    COEFFICIENTS = 10
    PAIRS = 4

    def __init__(self, num_classes: int, width: float = 1.0, resolution: int = 49) -> None:
        super().__init__()
        self.resolution = resolution
        c = _channels(64, width)
        layers: list[nn.Module] = [nn.Conv2d(1, c, (10, 4), 2, (5, 1), bias=False),
                                   nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(self.PAIRS):
            layers += [nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def example_input(self) -> torch.Tensor:
        """A batch of one input: 1 channel, ``resolution`` frames, 10 coefficients."""
        return torch.zeros(1, 1, self.resolution, self.COEFFICIENTS)


ARCHITECTURES: dict[str, Callable[..., _Classifier]] = {
    "mbv2": MobileNetV2Tiny,
    "resnet8": ResNet8,
    "mbv1": MobileNetV1Tiny,
    "mobilenetv2": MobileNetV2,
    "ds-cnn": DSCNN,
}


def create(name: str, num_classes: int, width: float = 1.0, resolution: int = 32) -> _Classifier:
    """Build architecture ``name`` (one of :data:`ARCHITECTURES`) with fresh weights."""
    if name not in ARCHITECTURES:
        raise MedyateError(f"unknown architecture {name!r}; choose one of "
                           f"{', '.join(ARCHITECTURES)}")
    if not 0.1 <= width <= 4.0:
        raise MedyateError(f"width must be between 0.1 and 4 (got {width})")
    if not 16 <= resolution <= 256:
        raise MedyateError(f"resolution must be between 16 and 256 pixels (got {resolution})")
    if num_classes < 2:
        raise MedyateError(f"a classifier needs at least 2 classes (got {num_classes})")
    return ARCHITECTURES[name](num_classes, width=width, resolution=resolution)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (BatchNorm included; folding removes its share)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
