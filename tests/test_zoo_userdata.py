"""Loading the user's own data: both forms, and one clear error for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo.userdata import UserDataError, load_user_data


def _image(path: Path, size: tuple[int, int] = (8, 8), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)


def test_folder_of_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "dog" / "a.png", value=10)
    _image(tmp_path / "cat" / "a.png", value=20)
    _image(tmp_path / "cat" / "b.jpg", value=30)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    (tmp_path / "README.txt").write_text("top-level files are ignored")
    data = load_user_data(tmp_path)
    assert data.class_names == ("cat", "dog")
    assert data.y.tolist() == [0, 0, 1]
    assert data.x.shape == (3, 3, 8, 8) and data.x.dtype == np.uint8
    assert data.x[2, :, 0, 0].tolist() == [10, 245, 7]  # RGB, NCHW
    assert load_user_data(tmp_path, size=4).x.shape == (3, 3, 4, 4)


def test_npz_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=np.array([0, 1, 2, 1]))
    data = load_user_data(tmp_path / "nhwc.npz")
    assert np.array_equal(data.x, nhwc.transpose(0, 3, 1, 2)) and data.num_classes == 3
    grey = rng.random((2, 5, 5))
    np.savez(tmp_path / "grey.npz", x=grey, y=np.array([1, 0]), class_names=np.array(["a", "b"]))
    data = load_user_data(tmp_path / "grey.npz", size=8)
    assert data.x.shape == (2, 3, 8, 8) and data.class_names == ("a", "b")


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: (p / "a").mkdir() or _image(p / "b" / "x.png"), r"class 'a' has no images"),
    (lambda p: _image(p / "a" / "x.png", (8, 8)) or _image(p / "b" / "y.png", (9, 8)),
     r"y\.png: image is 9x8 but .*x\.png is 8x8"),
    (lambda p: _image(p / "a" / "x.png") or (p / "b").mkdir() or
     (p / "b" / "broken.png").write_bytes(b"not a png"),
     r"broken\.png: cannot read it as an image"),
    (lambda p: None, r"no class sub-folders"),
])
def test_folder_errors(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(UserDataError, match=message) as info:
        load_user_data(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("arrays", "message"), [
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 5, 1]),
      "class_names": np.array(["a", "b"])}, r"label 5 is out of range 0\.\.1"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, r"label -1 is out of range"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2])}, r"class '1' has no samples"),
    ({"x": np.zeros((2, 4, 4), np.uint8)}, r"missing array\(s\) y"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0, 1])}, r"3 images but y has 2"),
    ({"x": np.full((2, 4, 4), 3.0), "y": np.array([0, 1])}, r"float images must lie in \[0, 1\]"),
    ({"x": np.zeros((2, 4, 4, 5), np.uint8), "y": np.array([0, 1])}, r"1 or 3 channels"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.0, 1.0])}, r"integer labels"),
])
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(UserDataError, match=message) as info:
        load_user_data(tmp_path / "data.npz")
    assert "\n" not in str(info.value)


def test_other_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(UserDataError, match=r"cannot read it as an \.npz"):
        load_user_data(tmp_path / "bad.npz")
    with pytest.raises(UserDataError, match="no such file"):
        load_user_data(tmp_path / "missing")
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(MedyateError, match=r"folder of class sub-folders or an \.npz"):
        load_user_data(tmp_path / "data.csv")
    np.savez(tmp_path / "three.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.array([0, 1, 2]))
    with pytest.raises(UserDataError, match=r"label 2 is out of range 0\.\.1"):
        load_user_data(tmp_path / "three.npz", num_classes=2)
