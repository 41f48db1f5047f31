"""Loading the user's own data into a ``Dataset`` (uint8 N×3×H×W images, int64 labels).

Two forms are accepted:

- a folder of class sub-folders of images (``data/cat/1.png``, ``data/dog/7.jpg``, ...); classes are
  the sub-folder names in sorted order, hidden files and files directly in the folder are ignored;
- an ``.npz`` file with ``x`` (uint8 in 0..255, or float in [0, 1]; ``N×H×W``, ``N×H×W×C`` or
  ``N×C×H×W`` with C = 1 or 3) and ``y`` (integer labels ``0..K-1``), optionally ``class_names``.

Every problem is reported as one ``UserDataError`` line that names the file at fault.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo.datasets import Dataset


class UserDataError(MedyateError):
    """The user's data set cannot be loaded as given."""


def load_user_data(path: Path | str, *, size: int | None = None,
                   num_classes: int | None = None) -> Dataset:
    """Load a folder of class sub-folders or an ``.npz`` (see the module doc).

    With ``size``, every image is resized to ``size``×``size``; without it, all images must share
    one size. With ``num_classes``, labels must lie in ``0..num_classes-1``.
    """
    path = Path(path)
    if not path.exists():
        raise UserDataError(f"{path}: no such file or folder")
    if path.is_dir():
        dataset = _load_folder(path, size)
    elif path.suffix.lower() == ".npz":
        dataset = _load_npz(path, size, num_classes)
    else:
        raise UserDataError(f"{path}: expected a folder of class sub-folders or an .npz file")
    if num_classes is not None and dataset.num_classes > num_classes:
        raise UserDataError(f"{path}: {dataset.num_classes} classes, but the model has "
                            f"{num_classes}")
    if dataset.num_classes < 2:
        raise UserDataError(f"{path}: only one class ({dataset.class_names[0]!r}); a classifier "
                            "to fine-tune needs at least 2 classes")
    return dataset


def _to_rgb_array(image: Image.Image, size: int | None) -> np.ndarray:
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def _load_folder(root: Path, size: int | None) -> Dataset:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserDataError(f"{root}: no class sub-folders (expected {root}/<class>/<image>)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    first: tuple[Path, tuple[int, ...]] | None = None
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise UserDataError(f"{folder}: class {folder.name!r} has no images")
        for file in files:
            try:
                with warnings.catch_warnings():  # Pillow only warns below twice its limit
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(file) as image:
                        array = _to_rgb_array(image, size)
            except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
                raise UserDataError(f"{file}: the image is too large to be a training sample "
                                    f"({exc}); resize it first") from None
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserDataError(f"{file}: cannot read it as an image ({reason})") from None
            if first is None:
                first = (file, array.shape)
            elif array.shape != first[1]:
                raise UserDataError(
                    f"{file}: image is {array.shape[2]}x{array.shape[1]} but {first[0]} is "
                    f"{first[1][2]}x{first[1][1]}; all images must share one size (or pass a "
                    "size to resize them)")
            images.append(array)
            labels.append(label)
    return Dataset(np.stack(images), np.asarray(labels, np.int64),
                   tuple(folder.name for folder in classes))


def _images_nchw(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise UserDataError(f"{path}: x must have shape N×H×W, N×H×W×C or N×C×H×W "
                            f"(got {x.shape})")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise UserDataError(f"{path}: x needs 1 or 3 channels (got shape {x.shape})")
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
            raise UserDataError(f"{path}: float images must lie in [0, 1] (got "
                                f"{float(np.nanmin(x)):.3g}..{float(np.nanmax(x)):.3g})")
        return np.rint(x * 255.0).astype(np.uint8)
    raise UserDataError(f"{path}: x must be uint8 or float in [0, 1] (got {x.dtype})")


def _load_npz(path: Path, size: int | None, num_classes: int | None) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("x", "y") if key not in data.files]
            if missing:
                raise UserDataError(f"{path}: missing array(s) {', '.join(missing)} (an .npz "
                                    "needs x and y)")
            x, y = data["x"], data["y"]
            names = [str(n) for n in data["class_names"]] if "class_names" in data.files \
                else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserDataError(f"{path}: cannot read it as an .npz ({exc})") from None
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserDataError(f"{path}: y must be a 1-D array of integer labels "
                            f"(got {y.dtype} {y.shape})")
    if len(x) != len(y):
        raise UserDataError(f"{path}: x has {len(x)} images but y has {len(y)} labels")
    if len(y) == 0:
        raise UserDataError(f"{path}: the data set is empty")
    x = _images_nchw(x, path)
    if size is not None and x.shape[2:] != (size, size):
        x = np.stack([_to_rgb_array(Image.fromarray(img.transpose(1, 2, 0)), size) for img in x])
    if names is not None:
        count = len(names)
    elif num_classes is not None:
        count = num_classes
    else:
        count = min(int(max(int(y.max()), 0)) + 1, len(y) + 1)  # more would leave a class empty
    bad = y[(y < 0) | (y >= count)]
    if bad.size:
        raise UserDataError(f"{path}: label {int(bad[0])} is out of range 0..{count - 1}"
                            + ("" if names is not None or num_classes is not None else
                               f" (labels must be 0..K-1 for K classes, each with samples; "
                               f"there are {len(y)} samples)"))
    empty = np.flatnonzero(np.bincount(y.astype(np.int64), minlength=count) == 0)
    if empty.size:
        which = names[int(empty[0])] if names is not None else str(int(empty[0]))
        raise UserDataError(f"{path}: class {which!r} has no samples")
    class_names = tuple(names) if names is not None else tuple(str(k) for k in range(count))
    return Dataset(x, y.astype(np.int64), class_names)
