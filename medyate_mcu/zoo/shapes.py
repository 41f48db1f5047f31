"""Procedural shapes: filled silhouettes drawn on a master canvas, plus distractor strokes."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "ring",
          "crescent", "arrow")
CANVAS = 96
_R = 30.0  # base radius of a shape on the master canvas


def _polygon(sides: int, phase: float, radius: float = _R) -> list[tuple[float, float]]:
    c = CANVAS / 2
    return [(c + radius * math.cos(phase + 2 * math.pi * k / sides),
             c + radius * math.sin(phase + 2 * math.pi * k / sides)) for k in range(sides)]


def _star(phase: float) -> list[tuple[float, float]]:
    c = CANVAS / 2
    points = []
    for k in range(10):
        radius = _R if k % 2 == 0 else _R * 0.42
        angle = phase + math.pi * k / 5
        points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
    return points


def draw_shape(name: str, rng: np.random.Generator, clutter: int = 2) -> np.ndarray:
    """A float mask in [0, 1] of shape ``name`` at a random orientation, with up to ``clutter``
    thin random strokes across the canvas as distractors."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    c = CANVAS / 2
    phase = rng.uniform(0, 2 * math.pi)
    box = (c - _R, c - _R, c + _R, c + _R)
    if name == "circle":
        draw.ellipse(box, fill=255)
    elif name in ("triangle", "square", "pentagon", "hexagon"):
        sides = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[name]
        draw.polygon(_polygon(sides, phase), fill=255)
    elif name == "star":
        draw.polygon(_star(phase), fill=255)
    elif name == "cross":
        arm = _R * 0.33
        draw.rectangle((c - _R, c - arm, c + _R, c + arm), fill=255)
        draw.rectangle((c - arm, c - _R, c + arm, c + _R), fill=255)
        image = image.rotate(math.degrees(phase), resample=Image.BILINEAR)
        draw = ImageDraw.Draw(image)
    elif name == "ring":
        inner = _R * rng.uniform(0.45, 0.65)
        draw.ellipse(box, fill=255)
        draw.ellipse((c - inner, c - inner, c + inner, c + inner), fill=0)
    elif name == "crescent":
        offset = _R * rng.uniform(0.45, 0.7)
        draw.ellipse(box, fill=255)
        dx, dy = offset * math.cos(phase), offset * math.sin(phase)
        draw.ellipse((c - _R + dx, c - _R + dy, c + _R + dx, c + _R + dy), fill=0)
    elif name == "arrow":
        shaft = [(-_R, -_R * 0.18), (_R * 0.15, -_R * 0.18), (_R * 0.15, -_R * 0.55), (_R, 0.0),
                 (_R * 0.15, _R * 0.55), (_R * 0.15, _R * 0.18), (-_R, _R * 0.18)]
        cos, sin = math.cos(phase), math.sin(phase)
        draw.polygon([(c + x * cos - y * sin, c + x * sin + y * cos) for x, y in shaft], fill=255)
    else:
        raise ValueError(f"unknown shape {name!r}")
    for _ in range(int(rng.integers(0, clutter + 1))):
        x0, y0, x1, y1 = rng.uniform(0, CANVAS, size=4)
        draw.line((x0, y0, x1, y1), fill=255, width=int(rng.integers(2, 4)))
    return np.asarray(image, dtype=np.float32) / 255.0
