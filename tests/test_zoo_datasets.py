"""The panel's datasets: deterministic, balanced, cached, correctly labelled."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from medyate_mcu.errors import MedyateError
from medyate_mcu.zoo import datasets, glyphs

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDYATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name", list(datasets.SPECS))
def test_same_seed_same_bytes_balanced_and_shaped(name: str) -> None:
    first = datasets.build(name, seed=3, train_per_class=3, test_per_class=2, cache=False)
    again = datasets.build(name, seed=3, train_per_class=3, test_per_class=2, cache=False)
    other = datasets.build(name, seed=4, train_per_class=3, test_per_class=2, cache=False)
    classes = len(datasets.SPECS[name].class_names)
    for part, per_class in (("train", 3), ("test", 2)):
        a, b = getattr(first, part), getattr(again, part)
        assert a.x.tobytes() == b.x.tobytes() and a.y.tobytes() == b.y.tobytes()
        assert a.x.shape == (classes * per_class, 3, 32, 32) and a.x.dtype == np.uint8
        assert a.y.dtype == np.int64
        assert np.array_equal(np.bincount(a.y, minlength=classes), np.full(classes, per_class))
    assert first.train.x.tobytes() != other.train.x.tobytes()
    assert first.train.x.tobytes() != first.test.x.tobytes()[:first.train.x.nbytes]


def test_cache_is_written_then_reused(_cache: Path) -> None:
    built = datasets.build("shapes", seed=1, train_per_class=2, test_per_class=2, size=24)
    files = list(_cache.glob("*.npz"))
    assert [f.name for f in files] == [
        f"shapes-v{datasets.SPECS['shapes'].version}-seed1-train2-test2-24px.npz"]
    files[0].write_bytes(b"damaged")  # a damaged cache is rebuilt, not trusted
    rebuilt = datasets.build("shapes", seed=1, train_per_class=2, test_per_class=2, size=24)
    assert rebuilt.train.x.tobytes() == built.train.x.tobytes()
    loaded = datasets.build("shapes", seed=1, train_per_class=2, test_per_class=2, size=24)
    assert loaded.test.x.tobytes() == built.test.x.tobytes()
    assert loaded.train.x.shape == (20, 3, 24, 24)


def test_test_split_alone_matches_full_build() -> None:
    full = datasets.build("greek", seed=2, train_per_class=1, test_per_class=2, cache=False)
    alone = datasets.build_test_split("greek", seed=2, test_per_class=2)
    assert alone.x.tobytes() == full.test.x.tobytes()


def test_digits_are_the_real_sklearn_digits_with_disjoint_splits() -> None:
    from sklearn.datasets import load_digits

    targets = load_digits().target
    train, test = datasets.digit_split_indices(targets, 50, 120, seed=0)
    assert not set(train.tolist()) & set(test.tolist())
    assert np.array_equal(np.bincount(targets[train]), np.full(10, 50))
    assert np.array_equal(np.bincount(targets[test]), np.full(10, 120))
    split = datasets.build("digits", seed=0, train_per_class=5, test_per_class=5, cache=False)
    assert split.train.class_names == tuple("0123456789")
    assert split.train.y.tolist() == sorted(split.train.y.tolist())
    with pytest.raises(MedyateError, match="at most 174 samples per class"):
        datasets.build("digits", train_per_class=100, test_per_class=100, cache=False)


def test_bad_requests_are_one_line_errors() -> None:
    with pytest.raises(MedyateError, match="unknown dataset 'mnist'"):
        datasets.build("mnist")
    with pytest.raises(MedyateError, match="at least 1"):
        datasets.build("shapes", train_per_class=0)


def test_usable_glyph_filter() -> None:
    latin = glyphs.LATIN_AND_DIGITS
    assert all(glyphs.usable_glyphs(FONT_DIR / "DejaVuSans.ttf", latin))
    # A placeholder font draws the same box for every character.
    assert not any(glyphs.usable_glyphs(FONT_DIR / "LastResortHE-Regular.ttf", latin))
    # cmsy10 maps ASCII digits to math symbols (prime, infinity, element-of, ...).
    assert sum(glyphs.usable_glyphs(FONT_DIR / "cmsy10.ttf", latin)[:10]) <= 1
    fonts = {font.name for font, _ in glyphs.glyph_table(latin)}
    assert {"DejaVuSans.ttf", "STIXGeneral.ttf", "cmr10.ttf", "cmtt10.ttf"} <= fonts
    assert not fonts & {"cmsy10.ttf", "cmex10.ttf", "LastResortHE-Regular.ttf"}
    assert len(fonts) >= 15


def test_rendered_glyph_shapes() -> None:
    """'O' is a wide ring with an empty centre; 'I' is a narrow bar with ink at the centre."""
    font = FONT_DIR / "DejaVuSans.ttf"
    o, i = glyphs.render_master(font, "O"), glyphs.render_master(font, "I")
    assert o.shape[1] / o.shape[0] > 0.75 and o[o.shape[0] // 2, o.shape[1] // 2] < 0.1
    assert i.shape[1] / i.shape[0] < 0.25 and i[i.shape[0] // 2, i.shape[1] // 2] > 0.9
    lower, upper = glyphs.render_master(font, "o"), glyphs.render_master(font, "O")
    assert lower.shape[0] < 0.85 * upper.shape[0]  # case survives: frames are not rescaled


def _ink(image: np.ndarray) -> np.ndarray:
    """Distance of each pixel from the border's median colour, zero-mean, unit norm."""
    image = image.astype(np.float32)
    border = np.concatenate([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], axis=1)
    ink = np.linalg.norm(image - np.median(border, axis=1)[:, None, None], axis=0)
    ink -= ink.mean()
    return ink / (np.linalg.norm(ink) + 1e-6)


def _digit_templates() -> np.ndarray:
    """Digits drawn independently with Pillow in three DejaVu faces and two sizes."""
    templates = []
    for name in ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf"):
        for size in (18, 22):
            font = ImageFont.truetype(str(FONT_DIR / name), size)
            row = []
            for char in "0123456789":
                image = Image.new("L", (32, 32), 0)
                ImageDraw.Draw(image).text((16, 16), char, font=font, fill=255, anchor="mm")
                pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), np.float32)
                pixels -= pixels.mean()
                row.append(pixels / np.linalg.norm(pixels))
            templates.append(row)
    return np.asarray(templates)


def test_source_digits_are_labelled_right() -> None:
    """Template matching against independent renders recognises the digit classes of the source
    task far above chance, and only with the labels as given."""
    test = datasets.build_test_split("chars", seed=5, test_per_class=12)
    keep = test.y < 10
    assert [test.class_names[k] for k in range(10)] == list("0123456789")
    templates = _digit_templates()
    predictions = []
    for image in test.x[keep]:
        ink = _ink(image)
        best = np.full(10, -np.inf)
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                scores = (templates * np.roll(ink, (dy, dx), (0, 1))).sum(axis=(2, 3)).max(0)
                best = np.maximum(best, scores)
        predictions.append(int(best.argmax()))
    labels = test.y[keep]
    assert np.mean(np.asarray(predictions) == labels) > 0.4
    assert np.mean(np.asarray(predictions) == (labels + 1) % 10) < 0.2


def test_shapes_have_their_geometric_areas() -> None:
    """Ink area of each silhouette (no clutter) against its closed-form area for radius R."""
    from medyate_mcu.zoo import shapes

    radius = 30.0
    expected = {"circle": np.pi * radius**2,
                "square": 2 * radius**2,
                "triangle": 3 * np.sqrt(3) / 4 * radius**2,
                "pentagon": 5 / 2 * np.sin(2 * np.pi / 5) * radius**2,
                "hexagon": 3 * np.sqrt(3) / 2 * radius**2}
    rng = np.random.default_rng(0)
    for name, area in expected.items():
        measured = float(shapes.draw_shape(name, rng, clutter=0).sum())
        assert abs(measured - area) / area < 0.06, name  # Pillow fills edge pixels too
    ring = shapes.draw_shape("ring", rng, clutter=0)
    assert ring[48, 48] == 0 and ring.sum() < 0.8 * expected["circle"]
    assert shapes.draw_shape("circle", rng, clutter=0)[48, 48] == 1
