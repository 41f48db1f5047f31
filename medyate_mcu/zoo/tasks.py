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
from medyate_mcu.zoo.speech import SPEECH_SETS, build_speech
from medyate_mcu.zoo.training import channel_stats
from medyate_mcu.zoo.userdata import (
    PIXEL_SCALE,
    UserData,
    fit_pixels,
    load_user_data,
    shape_text,
)

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
    if source in SPECS or source in SPEECH_SETS:
        data, test_mask = _named_set(source, shape, seed, train_per_class)
    elif Path(source).exists():
        data = load_user_data(source, shape, num_classes)
        test_mask = _stratified_test_mask(data.y, seed)
    else:
        raise MedyateError(f"data {source!r} is neither a named data set "
                           f"({', '.join([*SPECS, *SPEECH_SETS])}) nor an existing folder or "
                           ".npz file")
    if num_classes is not None and data.num_classes > num_classes:
        raise MedyateError(f"data {source!r} has {data.num_classes} classes, the model's head "
                           f"{num_classes}")
    encoding = _encoding(graph, data, source)
    stored = _to_ir(data.x, graph)
    stored_train, stored_test = stored[~test_mask], stored[test_mask]
    return TaskData(source, encoding.decode(stored_train), data.y[~test_mask],
                    encoding.decode(stored_test), data.y[test_mask], data.class_names,
                    stored_train, stored_test, encoding)


def _named_set(source: str, shape: tuple[int, ...], seed: int, train_per_class: int | None
               ) -> tuple[UserData, np.ndarray]:
    """A panel image set (fitted to the model's channels and H×W) or a keyword set; the samples
    of both splits and the mask of the test ones."""
    if source in SPEECH_SETS:
        split = build_speech(source, seed=seed, train_per_class=train_per_class)
    else:
        split = build(source, seed=seed, train_per_class=train_per_class,
                      size=max(shape[-2:]) if len(shape) == 3 else 32)
    x = np.concatenate([split.train.x, split.test.x])
    if source in SPEECH_SETS:
        if x.shape[1:] != shape:
            raise MedyateError(f"data {source!r} has samples of shape {shape_text(x.shape[1:])}; "
                               f"the model takes {shape_text(shape)}")
        data = UserData(x, np.concatenate([split.train.y, split.test.y]),
                        split.train.class_names)
    else:
        data = UserData(fit_pixels(x, shape, source), np.concatenate([split.train.y,
                                                                      split.test.y]),
                        split.train.class_names, PIXEL_SCALE)
    return data, np.arange(len(data.y)) >= len(split.train.y)


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


def default_tasks(graph: Graph) -> tuple[str, ...]:
    """The targets `experiment` sweeps by default: the keyword sets other than the one a model
    was pre-trained on (its ``medyate.source_task``), else the panel's downstream tasks."""
    source = graph.metadata.get("medyate.source_task")
    if source in SPEECH_SETS:
        return tuple(name for name in SPEECH_SETS if name != source)
    return DOWNSTREAM_TASKS


def proxy_task_for(target: str | None, graph: Graph | None = None,
                   panel: tuple[str, ...] = DOWNSTREAM_TASKS) -> str:
    """The LaRa proxy for ``target``: the next downstream task of the panel after it (never the
    target itself); for a keyword set, the other keyword set; for other data, the keyword set a
    keyword model was not pre-trained on, the panel's first task if the model takes images, else
    (no panel task has the model's shape) the target's own training split (docs/decisions.md)."""
    if target in panel:
        return panel[(panel.index(target) + 1) % len(panel)]
    if target in SPEECH_SETS:
        return next(name for name in SPEECH_SETS if name != target)
    source = graph.metadata.get("medyate.source_task") if graph is not None else None
    if source in SPEECH_SETS:  # speech data of the user's: rank on speech, not on images
        return next(name for name in SPEECH_SETS if name != source)
    shape = sample_shape(graph) if graph is not None else (3, 32, 32)
    if target is not None and (len(shape) != 3 or shape[0] not in (1, 3)):
        return target
    return panel[0]
