"""Training data as the network takes it: a panel task by name, or the user's own data set."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.zoo.datasets import DOWNSTREAM_TASKS, SPECS, build
from medyate_mcu.zoo.training import channel_stats, normalise
from medyate_mcu.zoo.userdata import load_user_data

USER_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TaskData:
    name: str
    x_train: np.ndarray  # float32 N×C×H×W, normalised as the model expects
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    raw_train: np.ndarray  # uint8 pixels of x_train, before normalisation
    raw_test: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def train_subset(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` training samples and labels, drawn by :func:`stratified_sample`."""
        chosen = stratified_sample(self.y_train, count, seed)
        return self.x_train[chosen], self.y_train[chosen]


def normalisation(graph: Graph, x_uint8: np.ndarray) -> tuple[list[float], list[float]]:
    """The model's input mean/std from its metadata, else the data's own statistics."""
    try:
        return (json.loads(graph.metadata["medyate.input_mean"]),
                json.loads(graph.metadata["medyate.input_std"]))
    except (KeyError, ValueError):
        return channel_stats(x_uint8)


def load_task(source: str, graph: Graph, seed: int = 0,
              train_per_class: int | None = None) -> TaskData:
    """``source``: a panel data set name (see `medyate-mcu zoo datasets`), a folder of class
    sub-folders, or an ``.npz``; user data is split 80/20 (seeded, stratified)."""
    size = graph.input_shape[-1]
    if source in SPECS:
        split = build(source, seed=seed, train_per_class=train_per_class, size=size)
        train, test = split.train, split.test
        x_train, y_train, x_test, y_test = train.x, train.y, test.x, test.y
        names = train.class_names
    elif Path(source).exists():
        data = load_user_data(source, size=size)
        test_mask = _stratified_test_mask(data.y, seed)
        x_train, y_train = data.x[~test_mask], data.y[~test_mask]
        x_test, y_test = data.x[test_mask], data.y[test_mask]
        names = data.class_names
    else:
        raise MedyateError(f"data {source!r} is neither a panel data set ({', '.join(SPECS)}) "
                           "nor an existing folder or .npz file")
    if x_train.shape[1:] != tuple(graph.input_shape):
        raise MedyateError(f"data {source!r} has samples of shape {x_train.shape[1:]}, the model "
                           f"takes {graph.input_shape}")
    mean, std = normalisation(graph, x_train)
    return TaskData(source, normalise(x_train, mean, std).numpy(), y_train.astype(np.int64),
                    normalise(x_test, mean, std).numpy(), y_test.astype(np.int64), tuple(names),
                    x_train, x_test, tuple(mean), tuple(std))


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` samples (every one if there are fewer), stratified by class and
    shuffled with ``seed``: each class gets a share proportional to its size (largest
    remainders; at least one sample per class when ``count`` is at least the class count), its
    members drawn at random. What a build embeds and what `verify` trains on, so that neither is
    the first classes of a data set sorted by class."""
    labels = np.asarray(labels)
    count = max(0, min(count, len(labels)))
    classes, sizes = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    shares = _class_shares(sizes, count, rng)
    picked = [rng.choice(np.flatnonzero(labels == label), size=share, replace=False)
              for label, share in zip(classes, shares, strict=True) if share]
    return rng.permutation(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def _class_shares(sizes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` split over classes of ``sizes`` members, in proportion (largest remainders,
    ties in random order), then at least one each when ``count`` allows."""
    exact = sizes * count / sizes.sum()
    shares = np.floor(exact).astype(np.int64)
    order = np.lexsort((rng.random(len(sizes)), -(exact - shares)))
    shares[order[:count - int(shares.sum())]] += 1
    while count >= len(sizes) and not shares.all():
        shares[np.argmax(shares)] -= 1  # the largest share has more than one
        shares[np.argmin(shares)] += 1  # a class with none
    return shares


def _stratified_test_mask(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = max(1, round(len(members) * USER_TEST_FRACTION)) if len(members) > 1 else 0
        mask[rng.choice(members, size=count, replace=False)] = True
    return mask


def proxy_task_for(target: str | None, panel: tuple[str, ...] = DOWNSTREAM_TASKS) -> str:
    """The LaRa proxy for ``target``: the next downstream task of the panel after it (never the
    target itself); the first one for a target outside the panel."""
    if target in panel:
        return panel[(panel.index(target) + 1) % len(panel)]
    return panel[0]
