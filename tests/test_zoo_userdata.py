"""Loading the user's own data in the model's shape: every form, and one clear line for each
kind of bad input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import load_onnx
from medyate_mcu.zoo import bundled_model_path
from medyate_mcu.zoo.tasks import load_task, proxy_task_for
from medyate_mcu.zoo.userdata import UserDataError, load_user_data

KWS = (1, 49, 10)
SENSOR = (6, 128)


def _image(path: Path, size: tuple[int, int] = (8, 8), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 7)).save(path)


def _graph(input_shape: tuple[int, ...], rank: int = 4, **metadata: str) -> SimpleNamespace:
    """What load_task reads of a graph: its IR input shape and its metadata."""
    return SimpleNamespace(input_shape=input_shape, metadata={"input_rank": str(rank),
                                                              **metadata})


def test_folder_of_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "dog" / "a.png", value=10)
    _image(tmp_path / "cat" / "a.png", (12, 5), value=20)  # any size: resized to the model's
    _image(tmp_path / "cat" / "b.jpg", value=30)
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"junk")  # hidden: ignored
    (tmp_path / "README.txt").write_text("top-level files are ignored")
    data = load_user_data(tmp_path, (3, 8, 8))
    assert data.class_names == ("cat", "dog")
    assert data.y.tolist() == [0, 0, 1]
    assert data.x.shape == (3, 3, 8, 8) and data.x.dtype == np.uint8 and data.pixels
    assert data.x[2, :, 0, 0].tolist() == [10, 245, 7]  # RGB, NCHW
    grey = load_user_data(tmp_path, (1, 6, 4))  # a 1-channel, non-square model
    assert grey.x.shape == (3, 1, 6, 4)
    expected = np.asarray(Image.new("RGB", (1, 1), (10, 245, 7)).convert("L"))[0, 0]
    assert grey.x[2, 0, 0, 0] == expected


def test_uint8_image_arrays_follow_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", x=nhwc, y=np.array([0, 1, 2, 1]))
    data = load_user_data(tmp_path / "nhwc.npz", (3, 6, 6))
    assert np.array_equal(data.x, nhwc.transpose(0, 3, 1, 2)) and data.num_classes == 3
    np.savez(tmp_path / "grey.npz", x=nhwc[..., 0], y=np.array([1, 0, 0, 1]),
             class_names=np.array(["a", "b"]))
    data = load_user_data(tmp_path / "grey.npz", (1, 8, 5))
    assert data.x.shape == (4, 1, 8, 5) and data.class_names == ("a", "b")


def test_float_features_of_any_sign_are_the_input(tmp_path: Path) -> None:
    """MFCCs (1×49×10, negative values) and a 1-D sensor window (6×128) go in as they are."""
    rng = np.random.default_rng(1)
    mfcc = (rng.normal(0, 4, (12, *KWS)) - 3).astype(np.float32)
    y = np.arange(12) % 3
    np.savez(tmp_path / "kws.npz", x=mfcc, y=y)
    task = load_task(str(tmp_path / "kws.npz"), _graph(KWS))
    stored = np.concatenate([task.stored_train, task.stored_test])
    assert task.encoding.format == "float32" and stored.dtype == np.float32
    assert sorted(map(bytes, stored)) == sorted(map(bytes, mfcc))  # bit for bit, any sign
    assert np.array_equal(task.x_train, task.stored_train)
    np.savez(tmp_path / "no_channel_axis.npz", x=mfcc[:, 0], y=y)
    assert load_user_data(tmp_path / "no_channel_axis.npz", KWS).x.shape == (12, *KWS)
    sensor = rng.normal(0, 9, (10, *SENSOR)).astype(np.float64)
    np.savez(tmp_path / "imu.npz", x=sensor, y=np.arange(10) % 2)
    task = load_task(str(tmp_path / "imu.npz"), _graph((6, 1, 128), rank=3))
    assert task.x_train.shape[1:] == (6, 1, 128) and task.x_train.dtype == np.float32


def test_stated_normalisation_and_quantized_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, (8, *KWS)).astype(np.int8)
    np.savez(tmp_path / "q.npz", x=q, y=np.arange(8) % 2, scale=0.05, zero_point=-3,
             mean=[1.5], std=[2.0])
    task = load_task(str(tmp_path / "q.npz"), _graph(KWS))
    assert task.encoding.format == "int8"
    real = (task.stored_train.astype(np.float64) + 3) * 0.05
    assert np.allclose(task.x_train, (real - 1.5) / 2.0, rtol=0, atol=1e-5)
    with pytest.raises(MedyateError, match="state the input normalisation once"):
        load_task(str(tmp_path / "q.npz"), _graph(KWS, **{"medyate.input_mean": "[0]",
                                                          "medyate.input_std": "[1]"}))


def test_compact_int8_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "imu.npz", x=rng.normal(0, 9, (20, *SENSOR)).astype(np.float32),
             y=np.arange(20) % 4)
    task = load_task(str(tmp_path / "imu.npz"), _graph((6, 1, 128), rank=3))
    compact = task.in_format("int8")
    assert compact.stored_train.dtype == np.int8
    assert np.array_equal(compact.x_train, compact.encoding.decode(compact.stored_train))
    assert np.abs(compact.x_train - task.x_train).max() < 0.5 / min(compact.encoding.std) + 1e-4


@pytest.mark.parametrize(("arrays", "shape", "message"), [
    ({"x": np.zeros((3, 49, 10), np.float32), "y": np.array([0, 5, 1]),
      "class_names": np.array(["a", "b"])}, KWS, r"label 5 is out of range 0\.\.1 \(2 class"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, (3, 4, 4),
     r"label -1 is out of range"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2])}, (3, 4, 4),
     r"class '1' has no samples"),
    ({"x": np.zeros((2, 4, 4), np.uint8)}, (3, 4, 4), r"missing array\(s\) y"),
    ({"x": np.zeros((3, 49, 10), np.float32), "y": np.array([0, 1])}, KWS,
     r"x has 3 samples but y has 2 labels"),
    ({"x": np.zeros((0, 49, 10), np.float32), "y": np.zeros(0, np.int64)}, KWS,
     r"the data set is empty"),
    ({"x": np.zeros((2, 49, 10), np.float32), "y": np.array([0.0, 1.0])}, KWS,
     r"integer labels \(got float64"),
    ({"x": np.zeros((2, 10, 49), np.float32), "y": np.array([0, 1])}, KWS,
     r"x has samples of shape 10×49 \(rank 2\); the model takes 1×49×10"),
    ({"x": np.zeros((2, 6, 128, 1), np.float32), "y": np.array([0, 1])}, SENSOR,
     r"x has samples of shape 6×128×1 \(rank 3\); the model takes 6×128"),
    ({"x": np.array([[[np.nan] * 10] * 49, [[0.0] * 10] * 49, [[np.inf] * 10] * 49]),
      "y": np.array([0, 1, 1])}, KWS, r"x has 980 NaN/Inf values \(the first in sample 0\)"),
    ({"x": np.zeros((2, 49, 10), np.int32), "y": np.array([0, 1])}, KWS,
     r"x is int32; give float, int8 or uint8 samples"),
    ({"x": np.zeros((2, 1, 49, 10), np.int8), "y": np.array([0, 1])}, KWS,
     r"int8 x needs a scale"),
    ({"x": np.zeros((2, 1, 49, 10), np.float32), "y": np.array([0, 1]), "scale": 0.1}, KWS,
     r"a scale belongs to int8/uint8 x"),
    ({"x": np.zeros((2, 1, 49, 10), np.int8), "y": np.array([0, 1]), "scale": 0.1,
      "zero_point": 300}, KWS, r"zero_point one integer in -128\.\.127"),
    ({"x": np.zeros((2, 4, 4, 5), np.uint8), "y": np.array([0, 1])}, (3, 4, 4),
     r"uint8 images are N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3"),
    ({"x": np.zeros((2, 6, 128), np.uint8), "y": np.array([0, 1])}, (*SENSOR, 1),
     r"images need a model taking 1×H×W or 3×H×W"),
    ({"x": np.zeros((2, 1, 49, 10), np.float32), "y": np.array([0, 1]), "mean": [0.0]}, KWS,
     r"give mean and std together"),
])
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], shape: tuple[int, ...],
                    message: str) -> None:
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(UserDataError, match=message) as info:
        load_user_data(tmp_path / "data.npz", shape)
    assert "\n" not in str(info.value)


def test_more_classes_than_the_head(tmp_path: Path) -> None:
    np.savez(tmp_path / "three.npz", x=np.zeros((3, *KWS), np.float32), y=np.array([0, 1, 2]))
    with pytest.raises(UserDataError, match=r"label 2 is out of range 0\.\.1 \(the model's head "
                                            r"has 2 classes\)"):
        load_user_data(tmp_path / "three.npz", KWS, num_classes=2)
    np.savez(tmp_path / "named.npz", x=np.zeros((3, *KWS), np.float32), y=np.array([0, 1, 2]),
             class_names=np.array(["a", "b", "c"]))
    with pytest.raises(UserDataError, match=r"label 2 is out of range 0\.\.1 \(the model's head"):
        load_user_data(tmp_path / "named.npz", KWS, num_classes=2)


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: (p / "a").mkdir() or _image(p / "b" / "x.png"), r"class 'a' has no images"),
    (lambda p: _image(p / "a" / "x.png") or (p / "b").mkdir() or
     (p / "b" / "broken.png").write_bytes(b"not a png"),
     r"broken\.png: cannot read it as an image"),
    (lambda p: None, r"no class sub-folders"),
])
def test_folder_errors(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(UserDataError, match=message) as info:
        load_user_data(tmp_path, (3, 8, 8))
    assert "\n" not in str(info.value)


def test_other_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(UserDataError, match=r"cannot read it as an \.npz"):
        load_user_data(tmp_path / "bad.npz", KWS)
    with pytest.raises(UserDataError, match="no such file"):
        load_user_data(tmp_path / "missing", KWS)
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(MedyateError, match=r"folder of class sub-folders or an \.npz"):
        load_user_data(tmp_path / "data.csv", KWS)
    _image(tmp_path / "imgs" / "a" / "x.png")
    _image(tmp_path / "imgs" / "b" / "x.png")
    with pytest.raises(UserDataError, match=r"this model takes 6×128 \(give an \.npz"):
        load_user_data(tmp_path / "imgs", SENSOR)


def test_a_keyword_model_ranks_user_data_on_speech() -> None:
    """A model pre-trained on a keyword set ranks a user's data on the other keyword set: an
    image task resized to 49x10 MFCCs would say nothing about which speech layers to train."""
    path = bundled_model_path("ds-cnn-kws")
    assert path is not None
    graph = load_onnx(path)
    assert graph.metadata["medyate.source_task"] == "kws"
    assert proxy_task_for("my-words.npz", graph) == "kws-newvoice"
    assert proxy_task_for("kws-newvoice", graph) == "kws"
    assert proxy_task_for("digits", graph) == "greek"  # a panel task keeps the panel's rule
