"""The bundled panel of datasets, built offline from what installed packages ship.

Every dataset is deterministic from a seed, balanced (same count per class in each split), made of
uint8 images ``N×3×S×S`` (NCHW, RGB) and int64 labels, and cached to disk as ``.npz`` after the
first build. Train and test samples come from independent random streams of the same generator.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medyate_mcu.errors import MedyateError
from medyate_mcu.outputs import write_npz_atomic
from medyate_mcu.zoo import glyphs, shapes
from medyate_mcu.zoo.render import Jitter, colourize, place


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` (uint8, N×3×S×S), labels ``y`` (int64, N) and the names of the classes."""

    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Split:
    """A named dataset's train and test splits."""

    name: str
    train: Dataset
    test: Dataset


# A builder makes ``count`` samples of class ``label`` from ``rng``: uint8 (count, 3, size, size).
Builder = Callable[[int, int, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset of the panel is made."""

    name: str
    role: str  # "source" or "downstream"
    description: str
    class_names: tuple[str, ...]
    train_per_class: int
    test_per_class: int
    builder: Builder | None  # None: a real data set, split rather than sampled
    max_per_class: int | None = None  # real data sets: samples available per class (both splits)
    version: int = 1  # bump when the generator changes, so stale caches are not reused


# ---------------------------------------------------------------- builders

_GLYPH_JITTER = Jitter(scale=(0.5, 0.72), rotate=12.0, shear=0.25, stretch=0.12, shift=0.08)


def _glyph_builder(charset: str, jitter: Jitter = _GLYPH_JITTER, textured: float = 0.0) -> Builder:
    def build(label: int, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
        char = charset[label]
        fonts = glyphs.fonts_for(charset)[char]
        out = np.empty((count, 3, size, size), np.uint8)
        for i in range(count):
            font = fonts[int(rng.integers(len(fonts)))]
            stroke = int(rng.integers(-1, 3))
            mask = place(glyphs.render_frame(font, char, stroke), size, jitter, rng)
            out[i] = colourize(mask, rng, textured=textured)
        return out
    return build


_DIGIT_JITTER = Jitter(scale=(0.30, 0.42), rotate=15.0, shear=0.2, stretch=0.15, shift=0.1)


def _digits_masks() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 handwritten digits (1797 samples) as 64×64 float masks."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    masks = np.stack([
        np.asarray(Image.fromarray((img / 16.0 * 255).astype(np.uint8)).resize(
            (64, 64), Image.BICUBIC), np.float32) / 255.0
        for img in digits.images])
    return masks, digits.target.astype(np.int64)


_TEXTURED = 0.8  # downstream glyph tasks: share of samples on a textured background
_GREEK_JITTER = Jitter(scale=(0.45, 0.75), rotate=20.0, shear=0.3, stretch=0.15, shift=0.1)
_SHAPE_JITTER = Jitter(scale=(0.32, 0.55), rotate=0.0, shear=0.3, stretch=0.25, shift=0.12)


def _shape_builder(label: int, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((count, 3, size, size), np.uint8)
    for i in range(count):
        mask = place(shapes.draw_shape(shapes.SHAPES[label], rng), size, _SHAPE_JITTER, rng)
        out[i] = colourize(mask, rng, min_contrast=60.0, noise=14.0)
    return out


SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        name="chars", role="source",
        description="printed Latin letters and digits (62 classes) in every usable matplotlib "
                    "TrueType font, random affine jitter, stroke weight, colours, blur, noise",
        class_names=tuple(glyphs.LATIN_AND_DIGITS), train_per_class=400, test_per_class=50,
        builder=_glyph_builder(glyphs.LATIN_AND_DIGITS)),
    DatasetSpec(
        name="digits", role="downstream",
        description="scikit-learn's bundled handwritten digits (real 8×8 scans), upsampled, "
                    "jittered and coloured, mostly on textured backgrounds",
        class_names=tuple("0123456789"), train_per_class=50, test_per_class=120,
        builder=None, max_per_class=174, version=2),
    DatasetSpec(
        name="greek", role="downstream",
        description="printed lowercase Greek letters (24 new classes) in every usable font, "
                    "stronger jitter, mostly on textured backgrounds",
        class_names=tuple(glyphs.GREEK_LOWER), train_per_class=30, test_per_class=50,
        builder=_glyph_builder(glyphs.GREEK_LOWER, _GREEK_JITTER, _TEXTURED), version=2),
    DatasetSpec(
        name="shapes", role="downstream",
        description="procedural filled shapes (10 classes) at any orientation, stretched and "
                    "sheared, with distractor strokes, colours and noise",
        class_names=shapes.SHAPES, train_per_class=30, test_per_class=100,
        builder=_shape_builder),
)}

SOURCE_TASK = "chars"
DOWNSTREAM_TASKS = tuple(name for name, spec in SPECS.items() if spec.role == "downstream")


# ---------------------------------------------------------------- building and caching

def cache_dir() -> Path:
    """Where built datasets are cached: ``$MEDYATE_CACHE`` or ``~/.cache/medyate-mcu``."""
    root = os.environ.get("MEDYATE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "medyate-mcu"


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise MedyateError(f"unknown dataset {name!r}; the panel has: {', '.join(SPECS)}")
    return SPECS[name]


def _sample_split(spec: DatasetSpec, per_class: int, size: int, seed: int, stream: int) -> Dataset:
    assert spec.builder is not None, f"{spec.name} is real data, not sampled"
    xs, ys = [], []
    for label in range(len(spec.class_names)):
        rng = np.random.default_rng([seed, stream, label])
        xs.append(spec.builder(label, per_class, size, rng))
        ys.append(np.full(per_class, label, np.int64))
    return Dataset(np.concatenate(xs), np.concatenate(ys), spec.class_names)


def digit_split_indices(targets: np.ndarray, train_pc: int, test_pc: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``load_digits()`` of the train and test scans: a seeded permutation per class,
    the first ``train_pc`` for training and the next ``test_pc`` for testing (disjoint)."""
    train, test = [], []
    for label in range(10):
        rng = np.random.default_rng([seed, 2, label])
        index = rng.permutation(np.flatnonzero(targets == label))
        train.append(index[:train_pc])
        test.append(index[train_pc:train_pc + test_pc])
    return np.concatenate(train), np.concatenate(test)


def _build_digits(spec: DatasetSpec, train_pc: int, test_pc: int, size: int,
                  seed: int) -> tuple[Dataset, Dataset]:
    masks, targets = _digits_masks()
    parts = []
    for part, indices in enumerate(digit_split_indices(targets, train_pc, test_pc, seed)):
        images = []
        for label in range(10):
            style = np.random.default_rng([seed, part, label])
            images += [colourize(place(masks[i], size, _DIGIT_JITTER, style), style,
                                 textured=_TEXTURED) for i in indices[targets[indices] == label]]
        parts.append(Dataset(np.stack(images), targets[indices], spec.class_names))
    return parts[0], parts[1]


def build_test_split(name: str, *, seed: int = 0, test_per_class: int | None = None,
                     size: int = 32) -> Dataset:
    """Only the test split of a generated (not real-data) dataset, without building the training
    split or touching the cache: the same bytes as ``build(...).test`` with these arguments."""
    spec = _spec(name)
    if spec.builder is None:
        raise MedyateError(f"{name}: a real-data set; use build()")
    per_class = spec.test_per_class if test_per_class is None else test_per_class
    return _sample_split(spec, per_class, size, seed, 1)


def build(name: str, *, seed: int = 0, train_per_class: int | None = None,
          test_per_class: int | None = None, size: int = 32, cache: bool = True) -> Split:
    """Build (or load from the cache) dataset ``name`` of the panel.

    ``train_per_class`` / ``test_per_class`` default to the panel's sizes; ``size`` is the image
    side in pixels. Same arguments, same bytes.
    """
    spec = _spec(name)
    train_pc = spec.train_per_class if train_per_class is None else train_per_class
    test_pc = spec.test_per_class if test_per_class is None else test_per_class
    if train_pc < 1 or test_pc < 1:
        raise MedyateError(f"{name}: samples per class must be at least 1 (got {train_pc}, "
                           f"{test_pc})")
    if spec.max_per_class is not None and train_pc + test_pc > spec.max_per_class:
        raise MedyateError(f"{name}: at most {spec.max_per_class} samples per class exist; "
                           f"asked for {train_pc} train + {test_pc} test")
    if not 8 <= size <= 256:
        raise MedyateError(f"image size must be between 8 and 256 pixels (got {size})")
    path = cache_dir() / (f"{name}-v{spec.version}-seed{seed}-train{train_pc}"
                          f"-test{test_pc}-{size}px.npz")
    if cache and path.is_file():
        try:
            with np.load(path) as data:
                train = Dataset(data["x_train"], data["y_train"], spec.class_names)
                test = Dataset(data["x_test"], data["y_test"], spec.class_names)
            return Split(name, train, test)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # a damaged cache file is rebuilt below
    if name == "digits":
        train, test = _build_digits(spec, train_pc, test_pc, size, seed)
    else:
        train = _sample_split(spec, train_pc, size, seed, 0)
        test = _sample_split(spec, test_pc, size, seed, 1)
    if cache:
        write_npz_atomic(path, x_train=train.x, y_train=train.y, x_test=test.x, y_test=test.y)
    return Split(name, train, test)
