"""Training loops of the panel: normalisation, a seeded mini-batch trainer, pre-training of the
demo model on the source task and its export to ONNX with metadata.

Normalisation is applied by the data pipeline, not baked into the model: a uint8 pixel ``p`` of
channel ``c`` enters the network as ``(p * (1/255) - mean[c]) / std[c]`` (zoo/samples.py), with
``mean`` and ``std`` stored in the model's metadata (``medyate.input_mean``,
``medyate.input_std``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import ReferenceNet, export_onnx, import_onnx_model
from medyate_mcu.method.sgd import accuracy, warmup_cosine
from medyate_mcu.zoo import architectures, datasets, speech
from medyate_mcu.zoo.samples import SampleEncoding, SampleFormat, pixel_encoding

META_PREFIX = "medyate."
EVAL_BATCH = 512  # samples per forward when measuring accuracy
COARSE_FINE_LR = 0.3  # after a coarse phase, the full-resolution phase's peak rate / lr


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images ``N×C×H×W`` on the [0, 1] scale."""
    scaled = x.astype(np.float64) / 255.0
    mean = scaled.mean(axis=(0, 2, 3))
    std = scaled.std(axis=(0, 2, 3))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def normalise(x: np.ndarray, mean: Iterable[float], std: Iterable[float]) -> torch.Tensor:
    """uint8 images -> the float32 tensor the network takes (zoo/samples.py, as on the
    device)."""
    return torch.from_numpy(pixel_encoding(tuple(mean), tuple(std)).decode(x))


def fit(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, *,
        epochs: int, lr: float, batch_size: int, seed: int, momentum: float = 0.0,
        weight_decay: float = 0.0, label_smoothing: float = 0.0, warmup_epochs: int = 0,
        progress: Progress | None = None, description: str = "training") -> float:
    """Mini-batch SGD on ``params`` with warm-up + cosine learning rate; returns the final
    epoch's mean training loss. The sample order is drawn from ``seed``."""
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                nesterov=momentum > 0)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    task = progress.add_task(description, total=epochs, status="") if progress else None
    step, epoch_loss = 0, float("nan")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        losses = []
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * warmup_cosine(step + 1, total, warmup)  # steps from 1
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        epoch_loss = float(np.mean(losses))
        if progress is not None and task is not None:
            status = f"epoch {epoch + 1} loss {epoch_loss:.3f}"
            progress.update(task, advance=1, status=status)
            if not progress.console.is_terminal and (epoch + 1) % max(1, epochs // 5) == 0:
                progress.console.print(f"{description}: {status}")  # a log for non-terminals
    return epoch_loss


@dataclass
class PretrainConfig:
    """Everything that determines the pre-trained demo model."""

    architecture: str = "mbv2"
    width: float = 1.0
    resolution: int = 32
    seed: int = 0
    epochs: int = 25
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 1
    train_per_class: int = 400
    test_per_class: int = 50
    threads: int = 2
    # Progressive resizing: first ``coarse_epochs`` epochs (warm-up + cosine) on the training
    # images average-pooled to ``coarse_resolution``, then ``epochs`` at ``resolution`` (cosine
    # from ``lr · COARSE_FINE_LR``, no warm-up). 0 (the demo): none.
    coarse_epochs: int = 0
    coarse_resolution: int = 0
    # What it is pre-trained on: a panel data set of images (see zoo/datasets.py) or a keyword
    # set of MFCC features (zoo/speech.py, whose test split has the set's own size).
    task: str = datasets.SOURCE_TASK
    # Float features (a keyword set): standardise them per channel (recorded in the metadata)
    # rather than taking them as they are.
    standardise_features: bool = False


@dataclass
class PretrainResult:
    """What pre-training produced and measured."""

    config: PretrainConfig
    model_path: str
    source_test_accuracy: float  # of the exported ONNX model, run by the reference forward pass
    torch_test_accuracy: float
    parameters: int  # after BatchNorm folding, as the compiler sees it
    onnx_bytes: int
    train_seconds: float
    data_seconds: float
    final_train_loss: float
    metadata: dict[str, str] = field(default_factory=dict)


def source_split_record(config: PretrainConfig, split: datasets.Split) -> dict[str, object]:
    """Which deterministic held-out split the recorded source accuracy is measured on."""
    record: dict[str, object] = {
        "dataset": config.task, "split": "test", "seed": config.seed,
        "train_per_class": config.train_per_class,
        "test_per_class": len(split.test) // split.test.num_classes, "size": config.resolution}
    if config.task in speech.SPEECH_SETS:
        return {**record, "generator_version": speech.VERSION,
                "espeak_ng": speech.espeak_version()}
    return {**record, "generator_version": datasets.SPECS[config.task].version}


def source_split(config: PretrainConfig) -> datasets.Split:
    """The data set ``config.task`` with the configured seed and sizes."""
    if config.task in speech.SPEECH_SETS:
        return speech.build_speech(config.task, seed=config.seed,
                                   train_per_class=config.train_per_class)
    return datasets.build(config.task, seed=config.seed, train_per_class=config.train_per_class,
                          test_per_class=config.test_per_class, size=config.resolution)


def network_inputs(split: datasets.Split, standardise: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """The train and test inputs as the network takes them, and the metadata saying how: uint8
    images normalised by the training split's channel statistics; float features as they are
    (no ``input_mean`` / ``input_std``), or with ``standardise`` shifted and scaled per channel
    by the training split's mean and standard deviation (recorded as ``input_mean`` /
    ``input_std``, which every data path then applies)."""
    if split.train.x.dtype == np.uint8:
        mean, std = channel_stats(split.train.x)
        return (normalise(split.train.x, mean, std), normalise(split.test.x, mean, std),
                {"input_layout": "NCHW RGB; x = (pixel / 255 - input_mean[c]) / input_std[c]",
                 "input_mean": json.dumps(mean), "input_std": json.dumps(std)})
    features = speech.FEATURES if split.name in speech.SPEECH_SETS else "NCHW float32 features"
    x_train, x_test = split.train.x.astype(np.float32), split.test.x.astype(np.float32)
    if not standardise:
        return (torch.from_numpy(x_train), torch.from_numpy(x_test),
                {"input_layout": f"{features}, taken as they are: no input normalisation"})
    mean = [round(float(v), 4) for v in x_train.mean(axis=(0, 2, 3), dtype=np.float64)]
    std = [round(float(v), 4) for v in x_train.std(axis=(0, 2, 3), dtype=np.float64)]
    encoding = SampleEncoding(SampleFormat.FLOAT32, 1.0, tuple(mean), tuple(std))  # as deployed
    return (torch.from_numpy(encoding.decode(x_train)), torch.from_numpy(encoding.decode(x_test)),
            {"input_layout": f"{features}; x = (feature - input_mean[c]) / input_std[c]",
             "input_mean": json.dumps(mean), "input_std": json.dumps(std)})


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``medyate.*`` metadata of an ONNX model, without the prefix."""
    return {prop.key[len(META_PREFIX):]: prop.value for prop in model.metadata_props
            if prop.key.startswith(META_PREFIX)}


def _check_writable(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedyateError(f"cannot create {output.parent}: {exc.strerror or exc}") from None
    if output.is_dir() or not os.access(output.parent, os.W_OK):
        raise MedyateError(f"cannot write {output}")


def pretrain(config: PretrainConfig, output: Path, progress: Progress | None = None,
             log: bool = True) -> PretrainResult:
    """Pre-train ``config.architecture`` on the source task and write it to ``output`` (ONNX,
    with metadata) plus ``output`` with suffix ``.json`` (settings and results)."""
    if config.epochs < 1:
        raise MedyateError(f"epochs must be at least 1 (got {config.epochs})")
    if config.coarse_epochs and (config.coarse_resolution < 1
                                 or config.resolution % config.coarse_resolution):
        raise MedyateError(f"the coarse resolution must divide {config.resolution} (got "
                           f"{config.coarse_resolution})")
    _check_writable(output)  # before training, not after minutes of it
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    split = source_split(config)
    data_seconds = time.perf_counter() - started
    x_train, x_test, input_metadata = network_inputs(split, config.standardise_features)
    y_train = torch.from_numpy(split.train.y)
    y_test = torch.from_numpy(split.test.y)
    model = architectures.create(config.architecture, split.train.num_classes, config.width,
                                 config.resolution)
    started = time.perf_counter()
    # (images, epochs, order seed, peak rate, warm-up epochs, label); a phase after a coarse
    # one continues from trained weights: no warm-up, COARSE_FINE_LR of the rate.
    phases = [(x_train, config.epochs, config.seed,
               config.lr * (COARSE_FINE_LR if config.coarse_epochs else 1.0),
               0 if config.coarse_epochs else config.warmup_epochs, "")]
    if config.coarse_epochs:
        coarse = F.avg_pool2d(x_train, config.resolution // config.coarse_resolution)
        phases.insert(0, (coarse, config.coarse_epochs, config.seed + 1, config.lr,
                          config.warmup_epochs, f" at {config.coarse_resolution} px"))
    for x_phase, epochs, seed, lr, warmup, where in phases:
        loss = fit(model, list(model.parameters()), x_phase, y_train, epochs=epochs,
                   lr=lr, batch_size=config.batch_size, seed=seed,
                   momentum=config.momentum, weight_decay=config.weight_decay,
                   label_smoothing=config.label_smoothing, warmup_epochs=warmup,
                   progress=progress, description=f"pre-training {config.architecture}{where}")
    train_seconds = time.perf_counter() - started
    torch_acc = accuracy(model, x_test, y_test, EVAL_BATCH)

    proto = export_onnx(model, model.example_input())
    graph = import_onnx_model(proto, name=config.architecture, origin="pre-training")
    reference_acc = accuracy(ReferenceNet(graph), x_test, y_test, EVAL_BATCH)
    metadata = {
        "architecture": config.architecture,
        "width": str(config.width),
        "resolution": str(config.resolution),
        **input_metadata,
        "num_classes": str(split.train.num_classes),
        "class_names": json.dumps(list(split.train.class_names), ensure_ascii=False),
        "source_task": config.task,
        "source_test_accuracy": f"{reference_acc:.4f}",
        "source_test_split": json.dumps(source_split_record(config, split)),
        "pretrain_config": json.dumps(asdict(config)),
    }
    existing = {prop.key: prop.value for prop in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**existing,
                                        **{META_PREFIX + k: v for k, v in metadata.items()}})
    try:
        onnx.save_model(proto, output)
    except OSError as exc:
        raise MedyateError(f"cannot write {output}: {exc.strerror or exc}") from None
    result = PretrainResult(
        config=config, model_path=str(output), source_test_accuracy=reference_acc,
        torch_test_accuracy=torch_acc, parameters=graph.parameter_count(),
        onnx_bytes=output.stat().st_size, train_seconds=round(train_seconds, 1),
        data_seconds=round(data_seconds, 1), final_train_loss=round(loss, 4), metadata=metadata)
    record = asdict(result)
    record["model_path"] = output.name
    record["torch_version"] = torch.__version__
    output.with_suffix(".json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return result
