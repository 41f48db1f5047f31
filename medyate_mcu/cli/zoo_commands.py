"""``medyate-mcu zoo``: the bundled panel of datasets, architectures and the demo model."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from medyate_mcu.errors import MedyateError
from medyate_mcu.outputs import write_npz_atomic


def _fail(exc: MedyateError) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group("zoo")
def zoo() -> None:
    """Bundled transfer-learning panel: offline datasets, reference architectures and the
    pre-trained demo model that ships with the package (nothing is downloaded).

    \b
    Reproduce the shipped model and its figures (docs/panel.md):
      medyate-mcu zoo datasets --build
      medyate-mcu zoo pretrain -o demo_mbv2.onnx
      medyate-mcu zoo evaluate -o brackets.md
    """


@zoo.command("datasets", short_help="List (or build) the panel's datasets.")
@click.option("--build/--no-build", "do_build", default=False,
              help="Build (or load from the cache) every dataset and show its split sizes.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generators.")
def datasets_command(do_build: bool, seed: int) -> None:
    """List the panel's datasets (source task and downstream tasks).

    Built datasets are cached as .npz under $MEDYATE_CACHE (default ~/.cache/medyate-mcu).
    """
    from medyate_mcu.zoo import SPECS, build, cache_dir

    table = Table(title=f"medyate-mcu panel (cache: {cache_dir()})")
    for column in ("name", "role", "classes", "train", "test", "how it is made"):
        table.add_column(column, overflow="fold")
    for spec in SPECS.values():
        train = spec.train_per_class * len(spec.class_names)
        test = spec.test_per_class * len(spec.class_names)
        if do_build:
            try:
                split = build(spec.name, seed=seed)
            except MedyateError as exc:
                raise _fail(exc) from None
            train, test = len(split.train), len(split.test)
        table.add_row(spec.name, spec.role, str(len(spec.class_names)), str(train), str(test),
                      spec.description)
    Console().print(table)


@zoo.command("pretrain", short_help="Pre-train a reference architecture on the source task.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("demo_mbv2.onnx"), show_default=True,
              help="Where to write the ONNX model (a .json with settings and results goes "
                   "next to it).")
@click.option("--arch", "architecture",
              type=click.Choice(["mbv2", "resnet8", "mbv1", "mobilenetv2", "ds-cnn"]),
              default="mbv2", show_default=True, help="Reference architecture.")
@click.option("--task", type=click.Choice(["chars", "kws"]), default="chars", show_default=True,
              help="Source task: printed characters (images), or keyword spotting (MFCCs, "
                   "with --arch ds-cnn --resolution 49).")
@click.option("--width", type=float, default=1.0, show_default=True, help="Width multiplier.")
@click.option("--resolution", type=int, default=32, show_default=True,
              help="Input side (px); ds-cnn: MFCC frames (49 for 1 s).")
@click.option("--epochs", type=int, default=25, show_default=True)
@click.option("--train-per-class", type=int, default=400, show_default=True,
              help="Source-task training samples per class.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Peak learning rate (warm-up, then cosine to 0).")
@click.option("--coarse-epochs", type=click.IntRange(0), default=0, show_default=True,
              help="Progressive resizing: epochs first trained on the images average-pooled to "
                   "--coarse-resolution, before --epochs at --resolution.")
@click.option("--coarse-resolution", type=int, default=0, show_default=True,
              help="Input side (px) of the coarse epochs; must divide --resolution.")
@click.option("--standardise-features", is_flag=True,
              help="Float features (kws): shift and scale them by the training split's mean and "
                   "standard deviation, recorded in the model (default: taken as they are).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for torch.")
def pretrain_command(output: Path, architecture: str, task: str, width: float, resolution: int,
                     epochs: int, train_per_class: int, batch_size: int, lr: float,
                     coarse_epochs: int, coarse_resolution: int, standardise_features: bool,
                     seed: int, threads: int) -> None:
    """Pre-train a reference architecture on a source task (printed characters, or keyword
    spotting) on the CPU.

    The defaults reproduce the demo model shipped in the package
    (medyate_mcu/zoo/models/demo_mbv2.onnx); docs/panel.md gives the options of the
    paper-scale model (mbv2_w035_128.onnx) and of the keyword-spotting DS-CNN
    (ds_cnn_kws.onnx).
    """
    from medyate_mcu.zoo.progress import make_progress
    from medyate_mcu.zoo.training import PretrainConfig, pretrain

    config = PretrainConfig(architecture=architecture, width=width, resolution=resolution,
                            epochs=epochs, train_per_class=train_per_class, seed=seed,
                            threads=threads, batch_size=batch_size, lr=lr,
                            coarse_epochs=coarse_epochs, coarse_resolution=coarse_resolution,
                            task=task, standardise_features=standardise_features)
    console = Console()
    try:
        with make_progress() as progress:
            result = pretrain(config, output, progress)
    except MedyateError as exc:
        raise _fail(exc) from None
    console.print(f"wrote {output} ({result.onnx_bytes / 1024:.1f} KiB, "
                  f"{result.parameters} parameters after BN folding)")
    console.print(f"source-task test accuracy: {result.source_test_accuracy:.2%} "
                  f"(training {result.train_seconds:.0f} s)")


@zoo.command("evaluate", short_help="Classifier-only vs full fine-tune accuracy per task.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Pre-trained ONNX model with medyate metadata (default: the "
                                 "bundled demo model).")
@click.option("--task", "tasks", multiple=True,
              type=click.Choice(["digits", "greek", "shapes", "kws-newvoice"]),
              help="Downstream task (repeatable; default: the image tasks). kws-newvoice: the "
                   "held-out voice, for a model pre-trained on kws (its head is kept).")
@click.option("--epochs", type=int, default=30, show_default=True,
              help="Training epochs of each run.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data splits, classifier initialisation and sample order.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads for torch (results depend on it in the last digits).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the table as Markdown here (and the raw results as .json).")
def evaluate_command(model_path: Path | None, tasks: tuple[str, ...], epochs: int, seed: int,
                     threads: int, output: Path | None) -> None:
    """Transfer brackets of a pre-trained model on the downstream tasks.

    For each task: test accuracy when only a new classifier is trained, and when the whole
    network is fine-tuned (no memory budget), both with the device's plain SGD on the model as
    the compiler sees it. Sparse on-device training lands between the two.
    """
    import json
    from dataclasses import asdict

    from medyate_mcu.zoo import DOWNSTREAM_TASKS, default_model_path
    from medyate_mcu.zoo.evaluation import EvalConfig, evaluate, markdown_table
    from medyate_mcu.zoo.progress import make_progress

    if epochs < 1:
        raise click.ClickException(f"--epochs must be at least 1 (got {epochs})")
    path = model_path or default_model_path()
    config = EvalConfig(seed=seed, epochs=epochs, threads=threads)
    try:
        with make_progress() as progress:
            results = evaluate(path, tasks or DOWNSTREAM_TASKS, config, progress)
    except MedyateError as exc:
        raise _fail(exc) from None
    table = Table(title=f"transfer brackets of {path.name}")
    for column in ("task", "classes", "train", "test", "before", "classifier only",
                   "full fine-tune", "gap"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in results:
        before = "-" if r.pretrained is None else f"{r.pretrained:.1%}"
        table.add_row(r.task, str(r.classes), str(r.train), str(r.test), before,
                      f"{r.classifier_only:.1%}", f"{r.full_finetune:.1%}",
                      f"{100 * r.gap:+.1f} pp")
    Console().print(table)
    if output is not None:
        record = {"model": path.name, "config": asdict(config),
                  "results": [asdict(r) for r in results]}
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(markdown_table(results))
            output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
        Console().print(f"wrote {output}")


@zoo.command("kws", short_help="Write the keyword-spotting set as an .npz for --data.")
@click.option("--out", "output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("kws.npz"), show_default=True,
              help="Where to write x (float32 N×1×49×10 MFCCs), y and class_names.")
@click.option("--voice", type=click.Choice(["source", "new"]), default="source",
              show_default=True, help="The pre-training voices (kws) or the held-out voice "
                                      "(kws-newvoice).")
@click.option("--split", "part", type=click.Choice(["all", "train", "test"]), default="all",
              show_default=True, help="Which samples: the training split, the test split, or "
                                      "both (train first).")
@click.option("--small", is_flag=True, help="A tiny set (4 samples per class and split), fast.")
@click.option("--seed", type=int, default=0, show_default=True)
def kws_command(output: Path, voice: str, part: str, small: bool, seed: int) -> None:
    """Synthesize the keyword-spotting set with espeak-ng (12 classes: silence, unknown and ten
    keywords; MFCC features 1×49×10 of any sign) and write it as an .npz a command takes with
    --data. Built sets are cached under $MEDYATE_CACHE (default ~/.cache/medyate-mcu).
    """
    import numpy as np

    from medyate_mcu.zoo.speech import build_speech

    name = "kws" if voice == "source" else "kws-newvoice"
    try:
        split = build_speech(name, seed=seed, small=small)
    except MedyateError as exc:
        raise _fail(exc) from None
    parts = {"train": [split.train], "test": [split.test], "all": [split.train, split.test]}
    x = np.concatenate([p.x for p in parts[part]])
    y = np.concatenate([p.y for p in parts[part]])
    try:
        write_npz_atomic(output, compress=False, x=x, y=y,
                         class_names=np.array(split.train.class_names))
    except MedyateError as exc:  # the folder or the disk (one line)
        raise _fail(exc) from None
    Console().print(f"wrote {output}: {len(y)} samples of {name} ({part}), x {x.dtype} "
                    f"{'×'.join(map(str, x.shape))}, {len(split.train.class_names)} classes")
