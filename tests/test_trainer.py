"""The host reference trainer: its sparse step against a dense PyTorch autograd step with the
unselected gradients masked, its schedule and its selection policies."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_builders import INPUT_SHAPE, TEST_MODELS, build_test_model

from medyate_mcu.graph import Graph, OpType, ReferenceNet, import_torch
from medyate_mcu.method.sgd import accuracy, sgd_step, warmup_cosine
from medyate_mcu.method.trainer import (
    SelectionRule,
    SparseTrainer,
    TrainSettings,
    channel_table,
    epoch_order,
    learning_rate,
    replace_classifier,
)


def headed(name: str) -> Graph:
    graph = import_torch(build_test_model(name), torch.zeros(1, *INPUT_SHAPE))
    return replace_classifier(graph, classes=5, seed=3)


def dense_masked_step(graph: Graph, net: ReferenceNet, per_layer: dict[str, list[int]],
                      x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
    """The oracle: full autograd, gradients masked to the selected input-channel slices."""
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    classifier = graph.producer(graph.output).name
    norms = {}
    with torch.no_grad():
        for node in graph.nodes_of(OpType.CONV, OpType.LINEAR):
            key = net.keys[node.name]
            weight, bias = net.weights[key], net.biases[key]
            if node.name == classifier:
                weight -= lr * weight.grad
                bias -= lr * bias.grad
                continue
            if node.op is OpType.LINEAR:
                continue  # a hidden Linear layer is frozen
            channels = per_layer.get(node.name, [])
            mask = torch.zeros_like(weight)
            in_per_group = weight.shape[1]
            per_group_out = weight.shape[0] // node.conv.groups
            slices = []
            for c in channels:
                rows = slice((c // in_per_group) * per_group_out,
                             (c // in_per_group + 1) * per_group_out)
                mask[rows, c % in_per_group] = 1
                slices.append(weight.grad[rows, c % in_per_group].norm())
            if channels:
                norms[node.name] = torch.stack(slices)
            weight -= lr * weight.grad * mask
    return norms


@pytest.mark.parametrize("model", sorted(TEST_MODELS))
def test_sparse_step_equals_dense_masked_step(model: str) -> None:
    graph = headed(model)
    convs = [n.name for n in graph.nodes_of(OpType.CONV)]
    candidates = convs[len(convs) // 3:]
    trainer = SparseTrainer(graph, candidates, pool_bytes=0, rule=SelectionRule(False, False))
    rng = np.random.default_rng(0)
    table = channel_table(graph, candidates)
    selected = sorted(rng.choice(table.size, size=max(1, table.size // 3), replace=False))
    per_layer = trainer.table.split(selected)
    oracle = ReferenceNet(graph)
    x = torch.randn(6, *INPUT_SHAPE)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    _, _, norms = trainer.step(x, y, 0.1, per_layer)
    expected_norms = dense_masked_step(graph, oracle, per_layer, x, y, 0.1)
    for key in oracle.weights:
        torch.testing.assert_close(trainer.net.weights[key], oracle.weights[key],
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(trainer.net.biases[key], oracle.biases[key],
                                   rtol=0, atol=0)  # conv biases frozen, classifier's both ways
    assert set(norms) == set(expected_norms)
    for name in norms:
        torch.testing.assert_close(norms[name], expected_norms[name], rtol=1e-4, atol=1e-7)


def test_epoch_changes_only_selected_slices_and_classifier() -> None:
    graph = headed("mobilenetv2")
    convs = [n.name for n in graph.nodes_of(OpType.CONV)]
    table = channel_table(graph, convs[-4:])
    pool = sum(table.channel_costs()) // 5
    trainer = SparseTrainer(graph, convs[-4:], pool, SelectionRule(True, True),
                            TrainSettings(epochs=1, batch_size=4))
    before = {k: v.detach().clone() for k, v in trainer.net.weights.items()}
    x = np.random.default_rng(0).standard_normal((12, *INPUT_SHAPE)).astype(np.float32)
    y = np.arange(12) % 5
    record = trainer.train_epoch(x, y, epoch=1)
    assert sum(table.channel_costs()[c] for c in record.selected) <= pool
    per_layer = table.split(record.selected)
    for node in graph.nodes_of(OpType.CONV):
        key = trainer.net.keys[node.name]
        changed = (trainer.net.weights[key] != before[key]).any(dim=(0, 2, 3))
        in_per_group = node.params["weight"].shape[1]
        allowed = {c % in_per_group for c in per_layer.get(node.name, [])}
        assert set(torch.nonzero(changed).flatten().tolist()) <= allowed
    # after epoch 1: selected channels carry their mean norm, the others the maximum seen
    chosen = trainer.norms[record.selected]
    assert (chosen >= 0).all() and chosen.max() > 0
    others = np.delete(trainer.norms, record.selected)
    assert np.all(others == chosen.max())


def test_learning_rate_schedule() -> None:
    settings = TrainSettings(epochs=6, lr=0.1, warmup=2)
    rates = [learning_rate(e, settings) for e in range(1, 7)]
    assert rates[:3] == pytest.approx([0.05, 0.1, 0.1])
    assert rates[3] == pytest.approx(0.1 * (1 + np.cos(np.pi / 4)) / 2)
    assert all(a > b for a, b in itertools.pairwise(rates[2:])) and rates[-1] > 0


def test_warmup_cosine_by_hand() -> None:
    # 5 steps, 2 of warm-up, peak 2: 1, 2, then 2·(1 + cos(π·k/3))/2 for k = 0, 1, 2.
    rates = [warmup_cosine(i, 5, 2, 2.0) for i in range(1, 6)]
    assert rates == pytest.approx([1.0, 2.0, 2.0, 1.5, 0.5])
    assert warmup_cosine(1, 4, 0) == 1.0 and warmup_cosine(4, 4, 0) == pytest.approx(
        (1 + np.cos(3 * np.pi / 4)) / 2)


def test_sgd_step_matches_torch_sgd() -> None:
    torch.manual_seed(3)
    ours, theirs = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    theirs.load_state_dict(ours.state_dict())
    x, y = torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0])
    seen = []
    sgd_step(F.cross_entropy(ours(x), y), list(ours.parameters()), 0.3,
             lambda: seen.append(ours.weight.grad.clone()))
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.3)
    F.cross_entropy(theirs(x), y).backward()
    assert torch.equal(seen[0], theirs.weight.grad)  # the hook saw this step's gradient
    optimizer.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
        assert a.grad is None


def test_accuracy_by_hand_keeps_the_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False), torch.nn.Dropout(0.9))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))  # predicts the larger coordinate
    x = np.array([[1, 0], [0, 1], [2, 1], [0, 3], [5, 4]], np.float32)
    y = np.array([0, 1, 1, 1, 0])
    model.train()
    assert accuracy(model, x, y, batch_size=2) == 4 / 5  # dropout off: eval mode
    assert model.training


def test_epoch_order_is_a_seeded_permutation() -> None:
    order = epoch_order(50, seed=1, epoch=2)
    assert sorted(order) == list(range(50))
    assert order == epoch_order(50, seed=1, epoch=2)
    assert order != epoch_order(50, seed=1, epoch=3)


def test_replace_classifier_is_seeded() -> None:
    graph = import_torch(build_test_model("resnet"), torch.zeros(1, *INPUT_SHAPE))
    a, b = replace_classifier(graph, 7, seed=1), replace_classifier(graph, 7, seed=1)
    head_a, head_b = a.producer(a.output), b.producer(b.output)
    assert head_a.params["weight"].shape == (7, 16)
    assert np.array_equal(head_a.params["weight"], head_b.params["weight"])
    assert a.output_shape == (7,)
    assert graph.producer(graph.output).params["weight"].shape == (10, 16)  # original untouched
