"""LaRa scores against a hand-rolled autograd computation; the ranking file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_builders import INPUT_SHAPE, build_test_model

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import OpType, ReferenceNet, import_torch
from medyate_mcu.method.lara import (
    LaraSettings,
    LayerRanking,
    backbone_fingerprint,
    compute_lara,
    input_channel_norms,
)
from medyate_mcu.method.trainer import epoch_order, replace_classifier


@pytest.fixture(scope="module")
def graph():
    return import_torch(build_test_model("depthwise_separable"), torch.zeros(1, *INPUT_SHAPE))


def data(n: int = 20):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, *INPUT_SHAPE)).astype(np.float32), np.arange(n) % 4


def test_one_step_scores_match_autograd(graph) -> None:
    x, y = data(8)
    settings = LaraSettings(epochs=1, batch_size=8, lr=0.01)
    ranking = compute_lara(graph, x, y, classes=4, proxy_task="toy", settings=settings)
    # oracle: the same single step, by hand
    net = ReferenceNet(replace_classifier(graph, 4, settings.seed))
    order = epoch_order(8, settings.seed, 1)
    F.cross_entropy(net(torch.from_numpy(x[order])), torch.from_numpy(y[order])).backward()
    for node in graph.nodes_of(OpType.CONV):
        weight = net.weights[net.keys[node.name]]
        c_in, h, w = graph.shapes[node.inputs[0]]
        out, _, kh, kw = weight.shape
        units = c_in * ((out // node.conv.groups) * kh * kw + h * w)
        assert ranking.scores[node.name] == pytest.approx(float(weight.grad.norm()) / units,
                                                          rel=1e-5)
        slices = [weight.grad[(c // weight.shape[1]) * (out // node.conv.groups):
                              (c // weight.shape[1] + 1) * (out // node.conv.groups),
                              c % weight.shape[1]].norm() for c in range(c_in)]
        assert np.allclose(ranking.channel_norms[node.name], torch.stack(slices).numpy(),
                           rtol=1e-5)


def test_ranking_orders_by_score_and_round_trips(graph, tmp_path: Path) -> None:
    x, y = data()
    ranking = compute_lara(graph, x, y, 4, "toy", LaraSettings(epochs=2, batch_size=5))
    scores = [ranking.scores[name] for name in ranking.ranking]
    assert scores == sorted(scores, reverse=True)
    assert sorted(ranking.ranking) == sorted(n.name for n in graph.nodes_of(OpType.CONV))
    path = tmp_path / "rank.json"
    ranking.save(path)
    loaded = LayerRanking.load(path, graph)
    assert loaded.ranking == ranking.ranking and loaded.proxy_task == "toy"
    assert json.loads(path.read_text())["fingerprint"] == backbone_fingerprint(graph)


def test_ranking_for_another_model_is_refused(graph, tmp_path: Path) -> None:
    x, y = data(4)
    path = tmp_path / "rank.json"
    compute_lara(graph, x, y, 4, "toy", LaraSettings(epochs=1)).save(path)
    other = import_torch(build_test_model("depthwise_separable", seed=1),
                         torch.zeros(1, *INPUT_SHAPE))
    with pytest.raises(MedyateError, match="another model"):
        LayerRanking.load(path, other)
    path.write_text("{not json")
    with pytest.raises(MedyateError, match="not a LaRa ranking file"):
        LayerRanking.load(path)


def test_input_channel_norms_grouped() -> None:
    grad = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)  # G=1: 3 inputs
    assert torch.allclose(input_channel_norms(grad, 1),
                          torch.stack([grad[:, c].norm() for c in range(3)]))
    dw = torch.randn(6, 1, 3, 3)  # depthwise, multiplier 2: input c owns rows 2c, 2c+1
    assert torch.allclose(input_channel_norms(dw, 3),
                          torch.stack([dw[2 * c:2 * c + 2].norm() for c in range(3)]))
