"""Glyph sources: the TrueType fonts matplotlib ships, and which of their glyphs are usable.

A glyph counts as usable in a font when the font maps the character, the glyph has ink, it is not a
copy of another character's glyph in that font (placeholder fonts draw one box for everything), and
its shape is close to the same character in the reference DejaVu fonts (symbol fonts such as
``cmsy10`` put unrelated symbols at ASCII code points). A font in which fewer than half of a
character set pass is a symbol font for that set, and none of its glyphs are used (its few
accidental matches, such as a bar for ``l``, are not trusted).
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import matplotlib
import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from medyate_mcu.errors import MedyateError

LATIN_AND_DIGITS = string.digits + string.ascii_uppercase + string.ascii_lowercase
GREEK_LOWER = "αβγδεζηθικλμνξοπρστυφχψω"

RENDER_SIZE = 48  # font size (px) of the high-resolution master glyph
_CANVAS = 96
_REFERENCE_FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf",
                    "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf")
_MIN_FONT_FRACTION = 0.5
_MAX_RANK = 4  # the true character must be among the 4 nearest reference characters


def font_dir() -> Path:
    """The folder of TrueType fonts inside the installed matplotlib."""
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def all_fonts() -> list[Path]:
    """Every ``.ttf`` file matplotlib ships, sorted by name."""
    fonts = sorted(font_dir().glob("*.ttf"))
    if not fonts:
        raise MedyateError(f"no TrueType fonts found in {font_dir()}; is matplotlib installed?")
    return fonts


@functools.lru_cache(maxsize=256)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=64)
def _cmap(path: str) -> frozenset[int]:
    return frozenset(TTFont(path, lazy=True).getBestCmap() or {})


@functools.lru_cache(maxsize=8192)
def _frame_pixels(font: Path, char: str, stroke: int, size: int) -> np.ndarray:
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    draw.text((_CANVAS // 2, _CANVAS // 2), char, font=_font(str(font), size), fill=255,
              anchor="mm", stroke_width=max(stroke, 0), stroke_fill=255)
    if stroke < 0:
        image = image.filter(ImageFilter.MinFilter(3))
    pixels = np.asarray(image, dtype=np.uint8)
    pixels.flags.writeable = False
    return pixels


def render_frame(font: Path, char: str, stroke: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
    """Render ``char`` in ``font`` centred (anchor ``mm``) on a fixed square canvas, as a float ink
    mask in [0, 1]. The frame is not cropped, so glyph size and baseline stay comparable across
    characters. ``stroke`` > 0 thickens strokes by that many pixels; -1 thins them. (Renders are
    cached as 8-bit pixels.)"""
    return _frame_pixels(font, char, stroke, size).astype(np.float32) / 255.0


def render_master(font: Path, char: str, size: int = RENDER_SIZE) -> np.ndarray:
    """Render ``char`` in ``font`` as a float ink mask in [0, 1], cropped to its ink."""
    mask = render_frame(font, char, 0, size)
    rows = np.flatnonzero(mask.max(axis=1) > 0.1)
    cols = np.flatnonzero(mask.max(axis=0) > 0.1)
    if rows.size == 0:
        return np.zeros((0, 0), np.float32)
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _descriptor(mask: np.ndarray) -> np.ndarray:
    """A size-normalised, blurred 24×24 picture of a glyph, unit L2 norm."""
    h, w = mask.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = mask
    small = Image.fromarray((square * 255).astype(np.uint8)).resize((24, 24), Image.BILINEAR)
    vec = np.asarray(small, dtype=np.float32).ravel()
    vec -= vec.mean()
    return vec / (np.linalg.norm(vec) + 1e-6)


@functools.lru_cache(maxsize=8)
def _reference_descriptors(charset: str) -> np.ndarray:
    """Descriptors of ``charset`` in the reference fonts, shape (fonts, chars, 576)."""
    refs = [font_dir() / name for name in _REFERENCE_FONTS]
    return np.stack([np.stack([_descriptor(render_master(f, c)) for c in charset]) for f in refs])


def usable_glyphs(font: Path, charset: str) -> list[bool]:
    """For each character of ``charset``, whether ``font`` draws it usably (see module doc)."""
    cmap = _cmap(str(font))
    masks = [render_master(font, c) if ord(c) in cmap else np.zeros((0, 0)) for c in charset]
    ok = [m.size > 0 and float(m.sum()) > 20.0 for m in masks]
    descs = [_descriptor(m) if good else None for m, good in zip(masks, ok, strict=True)]
    # Identical glyphs for different characters: a placeholder font, not real glyphs.
    for i in range(len(charset)):
        for j in range(i + 1, len(charset)):
            if ok[i] and ok[j] and masks[i].shape == masks[j].shape \
                    and np.abs(masks[i] - masks[j]).max() < 1e-3:
                ok[i] = ok[j] = False
    refs = _reference_descriptors(charset)
    for i, desc in enumerate(descs):
        if not ok[i] or desc is None:
            continue
        distance = np.min(np.linalg.norm(refs - desc, axis=2), axis=0)  # per reference char
        rank = int(np.sum(distance < distance[i]))
        ok[i] = rank < _MAX_RANK
    return ok


@functools.lru_cache(maxsize=8)
def glyph_table(charset: str) -> tuple[tuple[Path, tuple[str, ...]], ...]:
    """For every matplotlib font with usable glyphs in ``charset``: the font and those glyphs."""
    table = []
    for font in all_fonts():
        flags = usable_glyphs(font, charset)
        chars = tuple(c for c, good in zip(charset, flags, strict=True) if good)
        if len(chars) >= _MIN_FONT_FRACTION * len(charset):
            table.append((font, chars))
    return tuple(table)


def fonts_for(charset: str) -> dict[str, list[Path]]:
    """For each character, the fonts that draw it usably; every character must have at least one."""
    table = glyph_table(charset)
    result = {c: [font for font, chars in table if c in chars] for c in charset}
    missing = [c for c, fonts in result.items() if not fonts]
    if missing:
        raise MedyateError(f"no usable font draws {''.join(missing)!r} (fonts in {font_dir()})")
    return result
