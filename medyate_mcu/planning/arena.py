"""Static placement of buffers with known lifetimes in one arena.

Greedy by size, as TensorFlow Lite Micro's planner does: the largest buffer first, each at the
lowest aligned offset where it overlaps no already-placed buffer that is live at the same time.
Lifetimes are inclusive step ranges, so a step's inputs and outputs never share bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENT = 8


def align(size: int, alignment: int = ALIGNMENT) -> int:
    """``size`` rounded up to a multiple of ``alignment``."""
    return (size + alignment - 1) // alignment * alignment


def align_down(size: int, alignment: int = ALIGNMENT) -> int:
    """``size`` rounded down to a multiple of ``alignment`` (towards minus infinity)."""
    return size // alignment * alignment


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int  # bytes
    first: int  # first step that writes it
    last: int  # last step that reads it

    def live_with(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Placement:
    buffer: Buffer
    offset: int

    @property
    def end(self) -> int:
        return self.offset + align(self.buffer.size)


@dataclass(frozen=True)
class ArenaPlan:
    placements: tuple[Placement, ...]

    @property
    def size(self) -> int:
        return max((p.end for p in self.placements), default=0)

    @property
    def lower_bound(self) -> int:
        """The most bytes live at any one step: no placement can use less."""
        steps = {b.first for b in self.buffers} | {b.last for b in self.buffers}
        return max((sum(align(b.size) for b in self.buffers if b.first <= t <= b.last)
                    for t in steps), default=0)

    @property
    def buffers(self) -> list[Buffer]:
        return [p.buffer for p in self.placements]

    def offset_of(self, name: str) -> int:
        for placement in self.placements:
            if placement.buffer.name == name:
                return placement.offset
        raise KeyError(name)

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of buffers that are live together and share bytes (must be empty)."""
        found = []
        for i, a in enumerate(self.placements):
            for b in self.placements[i + 1:]:
                if a.buffer.live_with(b.buffer) and a.offset < b.end and b.offset < a.end:
                    found.append((a.buffer.name, b.buffer.name))
        return found


def plan_arena(buffers: list[Buffer]) -> ArenaPlan:
    """Place ``buffers`` greedily by size (ties: earlier first, then name, for determinism)."""
    names = [b.name for b in buffers]
    assert len(set(names)) == len(names), "buffer names must be unique"
    placed: list[Placement] = []
    for buffer in sorted(buffers, key=lambda b: (-align(b.size), b.first, b.name)):
        conflicts = sorted((p for p in placed if p.buffer.live_with(buffer)),
                           key=lambda p: p.offset)
        offset = 0
        for other in conflicts:
            if offset + align(buffer.size) <= other.offset:
                break
            offset = max(offset, other.end)
        placed.append(Placement(buffer, offset))
    placed.sort(key=lambda p: (p.offset, p.buffer.name))
    return ArenaPlan(tuple(placed))
