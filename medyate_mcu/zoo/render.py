"""Turning an ink mask into a jittered, coloured, noisy RGB sample (shared by every dataset)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Jitter:
    """Ranges of the random affine placement of a master mask into the output image.

    ``scale`` multiplies the master's pixels (so relative glyph sizes, e.g. ``o`` vs ``O``, are
    kept); ``rotate`` is in degrees, ``shear`` a tangent, ``shift`` a fraction of the output side.
    """

    scale: tuple[float, float]
    rotate: float = 12.0
    shear: float = 0.2
    stretch: float = 0.1
    shift: float = 0.08


def place(master: np.ndarray, size: int, jitter: Jitter, rng: np.random.Generator) -> np.ndarray:
    """Affine-map ``master`` (float mask in [0, 1], any size) into a ``size``×``size`` mask."""
    h, w = master.shape
    scale = rng.uniform(*jitter.scale) * size / 32.0
    angle = math.radians(rng.uniform(-jitter.rotate, jitter.rotate))
    shear = rng.uniform(-jitter.shear, jitter.shear)
    stretch = math.exp(rng.uniform(-jitter.stretch, jitter.stretch))
    sx, sy = scale * stretch, scale / stretch
    cos, sin = math.cos(angle), math.sin(angle)
    # Forward map (master centred -> output centred): R · Shear · S.
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]]) \
        @ np.diag([sx, sy])
    inverse = np.linalg.inv(forward)
    shift = rng.uniform(-jitter.shift, jitter.shift, size=2) * size
    centre_out = np.array([size / 2.0, size / 2.0]) + shift
    centre_in = np.array([w / 2.0, h / 2.0])
    offset = centre_in - inverse @ centre_out
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    image = Image.fromarray(np.clip(master * 255.0, 0, 255).astype(np.uint8))
    out = image.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=0)
    return np.asarray(out, dtype=np.float32) / 255.0


def _luma(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random background pattern in [0, 1]: stripes, a checkerboard or smooth blobs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0:  # stripes at any angle
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3)
        wave = np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle))
                      + rng.uniform(0, 2 * np.pi))
        return 0.5 + 0.5 * np.tanh(3.0 * wave)
    if kind == 1:  # checkerboard of random cell size and phase
        cell = rng.uniform(2.5, 6.0)
        dx, dy = rng.uniform(0, cell, size=2)
        return (((x + dx) // cell + (y + dy) // cell) % 2).astype(np.float32)
    coarse = rng.uniform(0, 1, size=(4, 4)).astype(np.float32)  # smooth blobs
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height),
                                                                     Image.BICUBIC)
    return np.asarray(image, np.float32) / 255.0


def _colour_pair(rng: np.random.Generator, min_contrast: float) -> tuple[np.ndarray, np.ndarray]:
    while True:
        ink, paper = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
        if abs(_luma(ink) - _luma(paper)) >= min_contrast:
            return ink, paper


def colourize(mask: np.ndarray, rng: np.random.Generator, *, blur: float = 0.8,
              noise: float = 10.0, min_contrast: float = 80.0,
              textured: float = 0.0) -> np.ndarray:
    """Ink ``mask`` (H×W in [0, 1]) -> uint8 3×H×W: random ink and background colours (luma
    contrast at least ``min_contrast``), a background gradient, Gaussian blur and pixel noise.
    With probability ``textured`` the background is a two-colour ``texture`` instead (both
    colours contrast with the ink)."""
    ink, paper = _colour_pair(rng, min_contrast)
    h, w = mask.shape
    radius = rng.uniform(0.0, blur)
    if radius > 0.05:
        image = Image.fromarray(np.clip(mask * 255.0, 0, 255).astype(np.uint8))
        mask = np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0
    ramp_y, ramp_x = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(-1, 1, size=2)
    gradient = (direction[0] * (ramp_y / h - 0.5) + direction[1] * (ramp_x / w - 0.5)) * 40.0
    background = paper[:, None, None] + gradient[None]
    if textured > 0.0 and rng.uniform() < textured:
        while True:
            other = rng.uniform(0, 255, size=3)
            if abs(_luma(other) - _luma(ink)) >= min_contrast * 0.75:
                break
        pattern = texture(h, w, rng)[None]
        background = background * (1.0 - pattern) + other[:, None, None] * pattern
    image = background * (1.0 - mask[None]) + ink[:, None, None] * mask[None]
    image += rng.normal(0.0, rng.uniform(0.0, noise), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
