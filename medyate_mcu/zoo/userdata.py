"""Loading the user's own data set in the shape the model takes.

Two forms are accepted:

- a folder of class sub-folders of images (``data/cat/1.png``, ``data/dog/7.jpg``, ...), for a
  model taking images ``C×H×W`` with C = 1 (read as grayscale) or 3 (RGB); every image is resized
  to the model's H×W. Classes are the sub-folder names in sorted order; hidden files and files
  directly in the folder are ignored.
- an ``.npz`` file with ``x`` and ``y`` (integer labels ``0..K-1``), optionally ``class_names``:
  - ``x`` holds samples of exactly the model's input shape (``C×H×W``, ``C×L`` for a 1-D model,
    ``F`` for a vector; a missing channel axis of size 1 is added);
  - float ``x`` (any sign and range) is the model's input as it is, unless ``mean`` and ``std``
    (one per channel) state a normalisation ``(x - mean[c]) / std[c]``;
  - int8/uint8 ``x`` with a ``scale`` (and ``zero_point``, default 0) holds quantized values
    ``(q - zero_point) * scale``;
  - uint8 ``x`` without a scale holds image pixels (``N×H×W``, ``N×H×W×C`` or ``N×C×H×W``),
    read as ``p / 255`` and converted to the model's channels and H×W like an image folder.

Every problem is reported as one ``UserDataError`` line that names the file at fault.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo.samples import PIXEL_SCALE


class UserDataError(MedyateError):
    """The user's data set cannot be loaded as given."""


@dataclass(frozen=True)
class UserData:
    """Samples as stored (float32, uint8 or int8; the model's input shape) and what they mean."""

    x: np.ndarray
    y: np.ndarray  # int64
    class_names: tuple[str, ...]
    scale: float = 1.0  # the real value of a stored q is (q - zero_point) * scale
    zero_point: int = 0
    mean: tuple[float, ...] | None = None  # a normalisation the data states
    std: tuple[float, ...] | None = None

    @property
    def pixels(self) -> bool:
        """uint8 image pixels (normalised by the data's own statistics if the model states
        none)."""
        return self.x.dtype == np.uint8 and self.scale == PIXEL_SCALE

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape)


def load_user_data(path: Path | str, sample_shape: tuple[int, ...],
                   num_classes: int | None = None) -> UserData:
    """Load a folder of class sub-folders or an ``.npz`` (see the module doc) for a model whose
    samples have ``sample_shape``. With ``num_classes``, at most that many classes."""
    path = Path(path)
    if not path.exists():
        raise UserDataError(f"{path}: no such file or folder")
    if path.is_dir():
        data = _load_folder(path, sample_shape)
    elif path.suffix.lower() == ".npz":
        data = _load_npz(path, sample_shape, num_classes)
    else:
        raise UserDataError(f"{path}: expected a folder of class sub-folders or an .npz file "
                            "(x, y)")
    if num_classes is not None and data.num_classes > num_classes:
        raise UserDataError(f"{path}: {data.num_classes} classes, but the model's head has "
                            f"{num_classes}")
    if data.num_classes < 2:
        raise UserDataError(f"{path}: only one class ({data.class_names[0]!r}); a classifier "
                            "to fine-tune needs at least 2 classes")
    return data


def image_mode(sample_shape: tuple[int, ...], origin: object) -> str:
    """The Pillow mode of the model's images: "L" for 1 channel, "RGB" for 3."""
    if len(sample_shape) != 3 or sample_shape[0] not in (1, 3):
        raise UserDataError(f"{origin}: images need a model taking 1×H×W or 3×H×W images; this "
                            f"model takes {shape_text(sample_shape)} (give an .npz with x of "
                            "that shape)")
    return "L" if sample_shape[0] == 1 else "RGB"


def fit_image(image: Image.Image, sample_shape: tuple[int, ...], origin: object) -> np.ndarray:
    """``image`` as the model's C×H×W uint8 pixels (its channels, resized to its H×W)."""
    mode = image_mode(sample_shape, origin)
    height, width = sample_shape[1:]
    image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(height, width, -1).transpose(2, 0, 1)


def fit_pixels(x: np.ndarray, sample_shape: tuple[int, ...], origin: object) -> np.ndarray:
    """uint8 images N×C×H×W (C = 1 or 3) -> the model's channels and H×W."""
    if x.shape[1:] == sample_shape:
        return np.ascontiguousarray(x)
    image_mode(sample_shape, origin)
    mode = {1: "L", 3: "RGB"}[x.shape[1]]
    return np.stack([fit_image(Image.fromarray(img.transpose(1, 2, 0).squeeze(-1)
                                               if mode == "L" else img.transpose(1, 2, 0), mode),
                               sample_shape, origin) for img in x])


def _load_folder(root: Path, sample_shape: tuple[int, ...]) -> UserData:
    image_mode(sample_shape, root)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserDataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise UserDataError(f"{folder}: class {folder.name!r} has no images")
        for file in files:
            images.append(_read_image(file, sample_shape))
            labels.append(label)
    return UserData(np.stack(images), np.asarray(labels, np.int64),
                    tuple(folder.name for folder in classes), PIXEL_SCALE)


def _read_image(file: Path, sample_shape: tuple[int, ...]) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # Pillow only warns below twice its limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                return fit_image(image, sample_shape, file)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UserDataError(f"{file}: the image is too large to be a training sample ({exc}); "
                            "resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserDataError(f"{file}: cannot read it as an image ({reason})") from None


def _pixel_images(x: np.ndarray, sample_shape: tuple[int, ...], path: Path) -> np.ndarray:
    """uint8 pixels N×H×W, N×H×W×C or N×C×H×W -> the model's images."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise UserDataError(f"{path}: x has samples of shape {shape_text(x.shape[1:])}; the "
                            f"model takes {shape_text(sample_shape)} (uint8 images are "
                            "N×H×W, N×H×W×C or N×C×H×W with C = 1 or 3)")
    return fit_pixels(x, sample_shape, path)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise UserDataError(f"{path}: missing array(s) {', '.join(missing)} (an .npz "
                                    "needs x and y)")
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserDataError(f"{path}: cannot read it as an .npz ({exc})") from None


def _stated(arrays: dict[str, np.ndarray], key: str, path: Path, count: int | None = None
            ) -> tuple[float, ...] | None:
    if key not in arrays:
        return None
    values = np.asarray(arrays[key]).reshape(-1)
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)) \
            or (count is not None and len(values) not in (1, count)):
        expected = "a finite number" if count is None else f"1 or {count} finite numbers"
        raise UserDataError(f"{path}: {key} must be {expected} (got {values.dtype} "
                            f"{arrays[key].shape})")
    if count is not None and len(values) == 1:
        values = np.repeat(values, count)
    return tuple(float(v) for v in values)


def _samples(arrays: dict[str, np.ndarray], sample_shape: tuple[int, ...], path: Path
             ) -> tuple[np.ndarray, float, int]:
    """``x`` in the model's shape, its scale and zero point."""
    x = arrays["x"]
    quantized = "scale" in arrays
    if x.dtype == np.uint8 and not quantized and x.shape[1:] != sample_shape:
        return _pixel_images(x, sample_shape, path), PIXEL_SCALE, 0
    if x.shape[1:] == sample_shape[1:] and sample_shape[0] == 1 and x.ndim == len(sample_shape):
        x = x[:, None]  # the channel axis of a 1-channel model left out
    if x.shape[1:] != sample_shape:
        raise UserDataError(f"{path}: x has samples of shape {shape_text(x.shape[1:])} (rank "
                            f"{x.ndim - 1}); the model takes {shape_text(sample_shape)}")
    if np.issubdtype(x.dtype, np.floating):
        if quantized:
            raise UserDataError(f"{path}: x is {x.dtype} but a scale is given; a scale "
                                "belongs to int8/uint8 x")
        finite = np.isfinite(x)
        if not finite.all():
            first = int(np.argwhere(~finite)[0][0])
            raise UserDataError(f"{path}: x has {int((~finite).sum())} NaN/Inf values (the "
                                f"first in sample {first}); remove or fix those samples")
        return np.ascontiguousarray(x, np.float32), 1.0, 0
    if x.dtype not in (np.uint8, np.int8):
        raise UserDataError(f"{path}: x is {x.dtype}; give float, int8 or uint8 samples")
    if not quantized:
        if x.dtype == np.int8:
            raise UserDataError(f"{path}: int8 x needs a scale (and zero_point): real value "
                                "= (x - zero_point) * scale")
        return np.ascontiguousarray(x), PIXEL_SCALE, 0
    scale = _stated(arrays, "scale", path)
    zero = _stated(arrays, "zero_point", path) or (0.0,)
    assert scale is not None
    info = np.iinfo(x.dtype)
    if len(scale) != 1 or scale[0] <= 0 or len(zero) != 1 or zero[0] != int(zero[0]) \
            or not info.min <= zero[0] <= info.max:
        raise UserDataError(f"{path}: scale must be one positive number and zero_point one "
                            f"integer in {info.min}..{info.max} (got {list(scale)}, "
                            f"{list(zero)})")
    return np.ascontiguousarray(x), scale[0], int(zero[0])


def _labels(y: np.ndarray, count_x: int, names: list[str] | None, num_classes: int | None,
            path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserDataError(f"{path}: y must be a 1-D array of integer labels "
                            f"(got {y.dtype} {y.shape})")
    if count_x != len(y):
        raise UserDataError(f"{path}: x has {count_x} samples but y has {len(y)} labels")
    if len(y) == 0:
        raise UserDataError(f"{path}: the data set is empty")
    count = len(names) if names is not None else min(max(int(y.max()), 0) + 1, len(y) + 1)
    limit = min(count, num_classes) if num_classes is not None else count
    bad = y[(y < 0) | (y >= limit)]
    if bad.size:
        why = (f"the model's head has {num_classes} classes" if limit == num_classes
               and limit < count else f"{len(names)} class names" if names is not None
               else f"labels are 0..K-1 for K classes, each with samples; {len(y)} samples")
        raise UserDataError(f"{path}: label {int(bad[0])} is out of range 0..{limit - 1} "
                            f"({why})")
    empty = np.flatnonzero(np.bincount(y.astype(np.int64), minlength=count) == 0)
    if empty.size:
        which = names[int(empty[0])] if names is not None else str(int(empty[0]))
        raise UserDataError(f"{path}: class {which!r} has no samples")
    class_names = tuple(names) if names is not None else tuple(str(k) for k in range(count))
    return y.astype(np.int64), class_names


def _load_npz(path: Path, sample_shape: tuple[int, ...], num_classes: int | None) -> UserData:
    arrays = _read_npz(path)
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    y, class_names = _labels(arrays["y"], len(arrays["x"]), names, num_classes, path)
    x, scale, zero = _samples(arrays, sample_shape, path)
    channels = sample_shape[0]
    mean, std = _stated(arrays, "mean", path, channels), _stated(arrays, "std", path, channels)
    if (mean is None) != (std is None) or (std is not None and 0.0 in std):
        raise UserDataError(f"{path}: give mean and std together, std non-zero")
    return UserData(x, y, class_names, scale, zero, mean, std)
