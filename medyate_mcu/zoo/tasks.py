"""Training data as the network takes it: a panel task by name, or the user's own data set."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.zoo.datasets import DOWNSTREAM_TASKS, SPECS, build
from medyate_mcu.zoo.samples import SampleEncoding, SampleFormat, int8_encoding
from medyate_mcu.zoo.training import channel_stats
from medyate_mcu.zoo.userdata import PIXEL_SCALE, UserData, fit_pixels, load_user_data

USER_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class TaskData:
    name: str
    x_train: np.ndarray  # float32, the network's input: ``encoding.decode(stored_train)``
    y_train: np.ndarray  # int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    stored_train: np.ndarray  # the samples as stored (embedded, sent over the serial link)
    stored_test: np.ndarray
    encoding: SampleEncoding

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def train_subset(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` training samples and labels, drawn by :func:`stratified_sample`."""
        chosen = stratified_sample(self.y_train, count, seed)
        return self.x_train[chosen], self.y_train[chosen]

    def stored_as(self, encoding: SampleEncoding) -> TaskData:
        """The same task with its samples stored in ``encoding`` (and the network's input
        decoded from them: what a device with that encoding trains on)."""
        if encoding == self.encoding:
            return self
        train, test = encoding.encode(self.x_train), encoding.encode(self.x_test)
        return replace(self, x_train=encoding.decode(train), x_test=encoding.decode(test),
                       stored_train=train, stored_test=test, encoding=encoding)

    def in_format(self, sample_format: str) -> TaskData:
        """``compile --sample-format``: "stored" (as the data stores them), "float32" (the
        network's input as it is) or "int8" (compact, per-channel range of the training
        split)."""
        if sample_format == "stored":
            return self
        if sample_format == SampleFormat.FLOAT32.value:
            return self.stored_as(SampleEncoding.identity(self.encoding.channels))
        if sample_format == SampleFormat.INT8.value:
            return self.stored_as(int8_encoding(self.x_train))
        raise MedyateError(f"unknown sample format {sample_format!r} (stored, float32 or int8)")


SAMPLE_FORMATS = ("stored", SampleFormat.FLOAT32.value, SampleFormat.INT8.value)


def sample_shape(graph: Graph) -> tuple[int, ...]:
    """A sample as the model's ONNX input has it: C×H×W, C×L for a 1-D model (stored as
    C×1×L in the IR), F for a vector."""
    shape = tuple(graph.input_shape)
    if graph.metadata.get("input_rank") == "3":
        return (shape[0], shape[2])
    return shape


def model_normalisation(graph: Graph) -> tuple[list[float], list[float]] | None:
    """The input mean/std the model's metadata states, if any."""
    try:
        return (json.loads(graph.metadata["medyate.input_mean"]),
                json.loads(graph.metadata["medyate.input_std"]))
    except (KeyError, ValueError):
        return None


def _encoding(graph: Graph, data: UserData, source: str) -> SampleEncoding:
    """How ``data``'s stored samples become the network's input: its scale and zero point,
    then one normalisation (the model's, else the data's; uint8 pixels: their own statistics)."""
    channels = data.x.shape[1]
    stated = model_normalisation(graph)
    if stated is not None and data.mean is not None:
        raise MedyateError(f"data {source!r} states a mean/std and so does the model's "
                           "metadata; state the input normalisation once")
    if stated is None and data.mean is not None:
        stated = (list(data.mean), list(data.std or ()))
    if stated is None and data.pixels and data.x.ndim == 4:
        stated = channel_stats(data.x)
    mean, std = stated if stated is not None else ([0.0] * channels, [1.0] * channels)
    if len(mean) != channels or len(std) != channels:
        raise MedyateError(f"the input normalisation has {len(mean)} means and {len(std)} "
                           f"stds; the model takes {channels} channels")
    zero_mean = data.zero_point * data.scale
    return SampleEncoding(SampleFormat(data.x.dtype.name), data.scale,
                          tuple(float(m) + zero_mean for m in mean), tuple(map(float, std)))


def _to_ir(x: np.ndarray, graph: Graph) -> np.ndarray:
    """Samples in the model's ONNX shape -> the IR's (C×L -> C×1×L)."""
    return x.reshape((len(x), *graph.input_shape))


def load_task(source: str, graph: Graph, seed: int = 0, train_per_class: int | None = None,
              num_classes: int | None = None) -> TaskData:
    """``source``: a panel data set name (see `medyate-mcu zoo datasets`), a folder of class
    sub-folders, or an ``.npz``; user data is split 80/20 (seeded, stratified). With
    ``num_classes``, data with more classes is refused."""
    shape = sample_shape(graph)
    if source in SPECS:
        split = build(source, seed=seed, train_per_class=train_per_class,
                      size=max(graph.input_shape[-2:]) if len(shape) == 3 else 32)
        train, test = split.train, split.test
        pixels = fit_pixels(np.concatenate([train.x, test.x]), shape, source)
        data = UserData(pixels, np.concatenate([train.y, test.y]), train.class_names,
                        PIXEL_SCALE)
        test_mask = np.arange(len(data.y)) >= len(train.y)
    elif Path(source).exists():
        data = load_user_data(source, shape, num_classes)
        test_mask = _stratified_test_mask(data.y, seed)
    else:
        raise MedyateError(f"data {source!r} is neither a panel data set ({', '.join(SPECS)}) "
                           "nor an existing folder or .npz file")
    if num_classes is not None and data.num_classes > num_classes:
        raise MedyateError(f"data {source!r} has {data.num_classes} classes, the model's head "
                           f"{num_classes}")
    encoding = _encoding(graph, data, source)
    stored = _to_ir(data.x, graph)
    stored_train, stored_test = stored[~test_mask], stored[test_mask]
    return TaskData(source, encoding.decode(stored_train), data.y[~test_mask],
                    encoding.decode(stored_test), data.y[test_mask], data.class_names,
                    stored_train, stored_test, encoding)


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
