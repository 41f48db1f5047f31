"""Samples a build embeds and `verify` trains on are drawn stratified by class, shuffled with the
build's seed: a class-sorted data set must not give the first classes only."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medyate_mcu.toolchain.compile import CompileOptions, compile_project
from medyate_mcu.zoo.tasks import stratified_sample


def sorted_labels(sizes: list[int]) -> np.ndarray:
    """Labels of a data set sorted by class, ``sizes[c]`` samples of class c."""
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("sizes, count, expected", [
    ([50, 30, 10, 5, 5], 20, [10, 6, 2, 1, 1]),  # exactly proportional
    ([40, 40, 10, 5, 5], 7, [2, 2, 1, 1, 1]),  # 2.8, 2.8, .7, .35, .35: every class kept
    ([96, 1, 1, 1, 1], 5, [1, 1, 1, 1, 1]),  # one each, though one class is 96 % of the data
    ([10, 10, 10], 4, [2, 1, 1]),  # largest remainders, a tie broken by the seed
    ([3, 2], 50, [3, 2]),  # more asked than there are: all
])
def test_shares_by_hand(sizes: list[int], count: int, expected: list[int]) -> None:
    labels = sorted_labels(sizes)
    chosen = stratified_sample(labels, count, seed=0)
    assert len(set(chosen.tolist())) == len(chosen) == sum(expected)
    counts = np.bincount(labels[chosen], minlength=len(sizes))
    if sizes == [10, 10, 10]:
        assert sorted(counts.tolist()) == [1, 1, 2]
    else:
        assert counts.tolist() == expected


def test_shares_property() -> None:
    """Random class sizes and counts: the right number of distinct samples, every class present
    when the count allows, each share within one sample of its exact proportion unless a class
    had to be lifted to one."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        sizes = rng.integers(1, 60, rng.integers(2, 12))
        labels = sorted_labels(sizes.tolist())
        count = int(rng.integers(0, len(labels) + 5))
        chosen = stratified_sample(labels, count, seed=int(rng.integers(1 << 30)))
        assert len(np.unique(chosen)) == len(chosen) == min(count, len(labels))
        counts = np.bincount(labels[chosen], minlength=len(sizes))
        assert (counts <= sizes).all()
        exact = sizes * min(count, len(labels)) / sizes.sum()
        if count >= len(sizes):
            assert (counts >= 1).all()
        if (exact >= 1).all() or count < len(sizes):
            assert (np.abs(counts - exact) < 1).all(), (sizes, count, counts)


def test_shuffled_with_the_seed() -> None:
    labels = sorted_labels([30, 30, 30])
    first = stratified_sample(labels, 30, seed=7)
    assert np.array_equal(first, stratified_sample(labels, 30, seed=7))
    assert not np.array_equal(first, stratified_sample(labels, 30, seed=8))
    assert not (np.diff(labels[first]) >= 0).all()  # not in class order


def class_folder(root: Path, classes: int, per_class: int) -> Path:
    """A class-folder data set whose files sort by class; every image is one flat colour whose red
    value is 40 × class + index, so a sample's class can be read from its pixels."""
    for label in range(classes):
        for index in range(per_class):
            folder = root / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * label + index, 0, 0)).save(folder / f"{index}.png")
    return root


def c_array(text: str, name: str) -> list[int]:
    found = re.search(rf"{name}\[\d+\] = \{{ ([\d, ]+) \}};", text)
    assert found, name
    return [int(v) for v in found.group(1).split(",")]


def test_embedded_samples_cover_every_class(tmp_path: Path) -> None:
    """5 classes of 10 images, sorted by class (8 train, 2 test each after the 80/20 split):
    20 embedded training samples are 4 per class, the 5 test samples 1 per class, each image
    with its own label, none twice, not in class order."""
    data = class_folder(tmp_path / "data", classes=5, per_class=10)
    out = tmp_path / "b"
    compile_project(CompileOptions(budget=200 * 1024, data=str(data), embed=20), out)
    text = (out / "data.c").read_text()
    train_y, test_y = c_array(text, "mdy_train_y"), c_array(text, "mdy_test_y")
    assert np.bincount(train_y).tolist() == [4] * 5
    assert sorted(test_y) == [0, 1, 2, 3, 4]
    assert train_y != sorted(train_y)
    rows = re.findall(r"^    \{ (\d+),", text.split("mdy_train_x")[1].split("mdy_test_x")[0],
                      re.MULTILINE)
    reds = [int(v) for v in rows]
    assert [red // 40 for red in reds] == train_y  # each image with its own label
    assert len(set(reds)) == len(reds)
