"""Small test networks, one per architecture family the importer must handle, and ONNX helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from medyate_mcu.graph import Graph, ReferenceNet, export_onnx
from medyate_mcu.graph.ir import OpType
from medyate_mcu.method.lara import backbone_fingerprint
from medyate_mcu.zoo import default_model_path


def randomize_batch_norms(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so that folding them is really tested."""
    generator = torch.Generator().manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            channels = layer.num_features
            layer.running_mean.copy_(torch.rand(channels, generator=generator) - 0.5)
            layer.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.rand(channels, generator=generator) - 0.5)
    return module.eval()


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU6) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn(cin, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, cout, 1, act=None),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2Style(nn.Module):
    """Inverted residuals with ReLU6, residual adds, global average pool, linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 2),
            InvertedResidual(8, 12, 2, 3),
            InvertedResidual(12, 12, 1, 3),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
        self.conv2 = conv_bn(cout, cout, 3, act=None)
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """ResNet-8-like: stem, basic blocks with identity and projection shortcuts."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, act=nn.ReLU)
        self.stage1 = BasicBlock(8, 8, 1)
        self.stage2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stage2(self.stage1(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


class PlainCNN(nn.Module):
    """Conv/ReLU/MaxPool (padded), an average pool that ignores padding, dropout, an MLP head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
            nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.AvgPool2d(3, 1, padding=1, count_include_pad=False),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(16 * 3 * 3, 24), nn.ReLU(),
                                  nn.Linear(24, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        return self.head(y.view(y.size(0), -1))


class DepthwiseSeparable(nn.Module):
    """MobileNetV1-like: depthwise + pointwise pairs, a grouped conv, mean over H and W."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, stride=2, act=nn.ReLU)
        self.dw1 = conv_bn(8, 8, 3, groups=8, act=nn.ReLU)
        self.pw1 = conv_bn(8, 16, 1, act=nn.ReLU)
        self.grouped = conv_bn(16, 16, 3, stride=2, groups=4, act=nn.ReLU)
        self.pw2 = nn.Conv2d(16, 24, 1)
        self.fc = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.grouped(self.pw1(self.dw1(self.stem(x)))))
        return self.fc(F.relu(y).mean(dim=(2, 3)))


TEST_MODELS: dict[str, type[nn.Module]] = {
    "mobilenetv2": MobileNetV2Style,
    "resnet": ResNetStyle,
    "plain_cnn": PlainCNN,
    "depthwise_separable": DepthwiseSeparable,
}
INPUT_SHAPE = (3, 16, 16)


def build_test_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batch_norms(TEST_MODELS[name](), seed)


# ---- hand-made ONNX graphs ------------------------------------------------------------------

def make_model(nodes: list[onnx.NodeProto], input_shape: list[int | str],
               initializers: dict[str, np.ndarray] | None = None, opset: int = 18,
               output: str = "y", extra_inputs: list[onnx.ValueInfoProto] | None = None,
               extra_outputs: list[onnx.ValueInfoProto] | None = None) -> onnx.ModelProto:
    """An ONNX model with input ``x`` (float32) and output ``output``; shapes left to inference."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape), *(extra_inputs or [])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None), *(extra_outputs or [])],
        initializer=[numpy_helper.from_array(np.asarray(v), k)
                     for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    try:  # fill in the output's shape, as exporters do (the ONNX checker wants it)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:
        return model


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Run ``model`` on each sample of ``x`` (batch 1 at a time) with onnxruntime."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def max_abs_error_vs_onnxruntime(graph: Graph, model: onnx.ModelProto, samples: int = 4,
                                 seed: int = 0) -> float:
    """Max |ReferenceNet(graph) - onnxruntime(model)| over random inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *graph.input_shape)).astype(np.float32)
    with torch.no_grad():
        ours = ReferenceNet(graph)(torch.from_numpy(x)).numpy()
    theirs = onnxruntime_outputs(model, x)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.abs(ours - theirs).max())


def write_tail_first_ranking(graph: Graph, path: Path) -> Path:
    """A LaRa ranking file for ``graph`` with its deepest conv layers first, made without a LaRa
    run (the bundled ranking's record with this graph's layers): the candidates are then the
    last layers, and an int8 region is as large as it gets."""
    return write_ranking(graph, path, [node.name for node in graph.nodes_of(OpType.CONV)][::-1])


def write_ranking(graph: Graph, path: Path, convs: list[str]) -> Path:
    """A LaRa ranking file for ``graph`` ranking ``convs`` in that order, made without a LaRa run
    (the bundled ranking's record with this graph's fingerprint and scores)."""
    record = json.loads(default_model_path().with_name("demo_mbv2.lara.json").read_text())
    record.update(fingerprint=backbone_fingerprint(graph), ranking=convs,
                  scores={name: float(len(convs) - i) for i, name in enumerate(convs)})
    path.write_text(json.dumps(record))
    return path


# ---- 1-D and non-square models (issue 12) ---------------------------------------------------

SENSOR_SHAPE = (6, 128)  # (C, L): six IMU axes, 128 time steps
KWS_SHAPE = (1, 49, 10)  # (C, H, W): 49 frames x 10 MFCC coefficients


def conv1d_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1,
                   groups: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm1d(cout), nn.ReLU()]


def sensor_conv1d_model(classes: int = 5, seed: int = 0) -> nn.Module:
    """A 6x128 time-series classifier: a strided Conv1d stem, depthwise and pointwise Conv1d,
    each with BatchNorm1d and ReLU, a max pool, AdaptiveAvgPool1d(1) and a Linear head."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        *conv1d_bn_relu(6, 16, 5, stride=2), *conv1d_bn_relu(16, 16, 3, groups=16),
        *conv1d_bn_relu(16, 24, 1), nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(24, classes))
    return randomize_batch_norms(module, seed)


def kws_dscnn_model(classes: int = 6, seed: int = 0) -> nn.Module:
    """A tiny DS-CNN for 1x49x10 keyword features: the classic 10x4 stride-2 stem (exported
    with symmetric pads 5/1; :func:`export_kws_dscnn` makes them TF's "same", 4/5 and 1/1),
    a depthwise 3x3 of stride (2, 1), a pointwise conv, a 1x2 average pool of stride (1, 2),
    the global average and a Linear head."""
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Conv2d(1, 8, (10, 4), 2, (5, 1), bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, (2, 1), 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        nn.AvgPool2d((1, 2), (1, 2)), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(12, classes))
    return randomize_batch_norms(module, seed)


def export_kws_dscnn(module: nn.Module) -> onnx.ModelProto:
    """``module`` (a :func:`kws_dscnn_model`) as ONNX with its stem's padding TF's "same"
    (``auto_pad=SAME_UPPER``: rows 4 above and 5 below, columns 1 and 1), as a TensorFlow
    DS-CNN converts; the output shape (25x5) is that of the symmetric 5/1 export."""
    model = export_onnx(module, torch.zeros(1, *KWS_SHAPE))
    stem = next(n for n in model.graph.node if n.op_type == "Conv")
    kept = [a for a in stem.attribute if a.name != "pads"]
    del stem.attribute[:]
    stem.attribute.extend(kept)
    for attribute in stem.attribute:
        if attribute.name == "auto_pad":
            attribute.s = b"SAME_UPPER"
    return model
