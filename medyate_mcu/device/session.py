"""Training a device over its serial link: what ``medyate-mcu train`` does, as a library.

The device receives the training samples as the build stores them (its manifest's encoding:
float32, uint8 or int8; READY says which) and decodes them; the host keeps the decoded input
``x``, what the reference trains on and what the trained ONNX model is checked with."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medyate_mcu.codegen.folder import Project
from medyate_mcu.codegen.serial import DEFAULT_BAUD, build_hash
from medyate_mcu.device import protocol as p
from medyate_mcu.device.export import trained_graph, write_trained_onnx
from medyate_mcu.device.link import DeviceLink
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph.ir import Graph
from medyate_mcu.method.trainer import TrainSettings, epoch_order
from medyate_mcu.zoo.samples import SampleEncoding
from medyate_mcu.zoo.tasks import stratified_sample


@dataclass
class TrainSession:
    link: DeviceLink
    ready: p.Ready
    graph: Graph
    settings: TrainSettings
    candidates: list[str]
    model_path: Path
    data_name: str
    stored: np.ndarray  # the samples as sent (the build's encoding)
    x: np.ndarray  # ``encoding.decode(stored)``: the network's input
    y: np.ndarray
    epochs: int
    encoding: SampleEncoding
    test_stored: np.ndarray  # held-out test samples the device classifies (PREDICT), stored
    test_y: np.ndarray

    @classmethod
    def open(cls, project: Project, port: str, data_name: str | None = None,
             epochs: int | None = None, samples: int | None = None, baud: int | None = None,
             timeout: float = 10.0, test_samples: int = 0) -> TrainSession:
        """Check the build and the data, connect, check the device runs this build, and restart
        its training from the pre-trained weights. ``test_samples`` of the data's test split
        (stratified) are kept for :meth:`test_accuracy`."""
        manifest = project.manifest
        graph, plan, settings, _ = project.reference()
        epochs = epochs or settings.epochs
        if epochs > settings.epochs:
            raise MedyateError(f"--epochs {epochs}: the build's learning-rate schedule has "
                               f"{settings.epochs} epochs; compile with --epochs {epochs}")
        task = project.task(data_name)
        chosen = (stratified_sample(task.y_train, samples, settings.seed) if samples
                  else np.arange(len(task.y_train)))  # as TaskData.train_subset draws them
        stored, x, y = task.stored_train[chosen], task.x_train[chosen], task.y_train[chosen]
        tests = stratified_sample(task.y_test, test_samples, settings.seed)
        board = project.board
        baud = baud or (board.baud if board else DEFAULT_BAUD)
        link = DeviceLink(port, baud=baud, timeout=timeout)
        try:
            ready = link.hello()
            check_samples(ready, task.encoding, x[0].size, port, project.folder)
            expected = build_hash(project.manifest_text)
            if ready.build_hash != expected:
                raise MedyateError(f"the device on {port} runs another build (build hash "
                                   f"{ready.build_hash.hex()}, {project.folder} is "
                                   f"{expected.hex()}); build and flash this one")
            model_hash = bytes.fromhex(manifest.model_sha256)[:8]
            if ready.model_hash != model_hash:
                raise MedyateError(f"the device on {port} runs a build of another model (model "
                                   f"hash {ready.model_hash.hex()}, {project.folder} is "
                                   f"{model_hash.hex()}); build and flash this one")
            if ready.input_size != x[0].size:
                raise MedyateError(f"the device takes {ready.input_size} inputs, the data "
                                   f"{x[0].size}")
            ready = link.reset()
        except BaseException:
            link.close()
            raise
        return cls(link, ready, graph, settings, list(plan.memory.schedule.candidates),
                   Path(manifest.model_path), task.name, stored, x, y, epochs, task.encoding,
                   task.stored_test[tests], task.y_test[tests])

    def __enter__(self) -> TrainSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.close()

    def train(self, on_sample: Callable[[int, int, float, float], None] | None = None
              ) -> Iterator[p.EpochResult]:
        """Each epoch: the samples in ``epoch_order``, then END_EPOCH; yields its statistics.
        ``on_sample(epoch, done, mean loss, accuracy)`` after every sample."""
        for epoch in range(1, self.epochs + 1):
            loss_sum, correct = 0.0, 0
            for done, index in enumerate(epoch_order(len(self.y), self.settings.seed, epoch), 1):
                result = self.link.train_sample(self.stored[index], int(self.y[index]))
                _check_finite(f"epoch {epoch}, sample {done}: the loss", result.loss)
                loss_sum += result.loss
                correct += result.correct
                if on_sample:
                    on_sample(epoch, done, loss_sum / done, correct / done)
            record = self.link.end_epoch()
            _check_finite(f"epoch {epoch}: the mean loss", record.loss)
            yield record

    def test_accuracy(self) -> float | None:
        """The share of the kept test samples the device classifies right now (None: no test
        samples were kept)."""
        if not len(self.test_y):
            return None
        correct = sum(self.link.predict(sample).label == int(label)
                      for sample, label in zip(self.test_stored, self.test_y, strict=True))
        return correct / len(self.test_y)

    def trained(self) -> Graph:
        layers, classifier = self.link.read_weights()
        for name, values in [*zip(self.candidates, layers, strict=False),
                             ("the classifier", classifier)]:
            _check_finite(f"the trained weights of {name}", values)
        if len(layers) != len(self.candidates):
            raise MedyateError(f"the device has {len(layers)} candidate layers, the build "
                               f"{len(self.candidates)}")
        return trained_graph(self.graph, dict(zip(self.candidates, layers, strict=True)),
                             classifier)

    def save(self, path: Path) -> Graph:
        """Read the weights back and write the trained ONNX model; the trained graph."""
        trained = self.trained()
        write_trained_onnx(self.model_path, self.graph, trained, path, self.x[0])
        return trained


def describe_samples(encoding: SampleEncoding, size: int) -> str:
    """e.g. "int8 samples, 490 B a frame" (as :meth:`protocol.Ready.describe_samples`)."""
    return p.samples_text(encoding.format.value, encoding.format.bytes * size)


def check_samples(ready: p.Ready, encoding: SampleEncoding, size: int, port: str,
                  folder: Path) -> None:
    """The device stores samples as the build does (READY's format and byte count), else one
    line saying what differs."""
    if (ready.sample_format, ready.sample_bytes) != (encoding.format,
                                                     encoding.format.bytes * size):
        raise MedyateError(f"the device on {port} takes {ready.describe_samples()}, {folder} "
                           f"sends {describe_samples(encoding, size)}: build and flash this one")


def _check_finite(what: str, values: float | np.ndarray) -> None:
    """Stop on a NaN or infinity from the device: nothing is saved."""
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise MedyateError(f"the device reported non-finite values: {what} ({bad} of "
                           f"{np.size(values)}); training diverged or the device is faulty; "
                           "nothing was saved")
