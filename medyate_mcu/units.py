"""Memory sizes as users write them: ``300kB``, ``0.5MB``, ``307200``."""

from __future__ import annotations

import re
from fractions import Fraction

from medyate_mcu.errors import MedyateError

_MULTIPLIERS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")
_EXAMPLES = "write e.g. 300kB, 300KiB, 0.5MB or 307200 (bytes)"
# The largest RAM a Cortex-M can map: its external-RAM region, 0x60000000-0x9FFFFFFF (the SRAM
# region is 512 MiB). Sizes beyond it cannot be a target's RAM, and an engine that large would
# not even link on the host (static data above 2 GiB).
MAX_SIZE = 1024**3


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in ``text``: a plain number is bytes; k/kB/KB/KiB = 1024; M/MB/MiB = 1024²."""
    match = _SIZE.match(text)
    if not match:
        raise MedyateError(f"{what} {text!r} is not a memory size; {_EXAMPLES}")
    number, unit = match.groups()
    multiplier = _MULTIPLIERS.get(unit.lower())
    if multiplier is None:
        raise MedyateError(f"{what} {text!r} has an unknown unit {unit!r}; units: "
                           "B, k/kB/KiB (1024), M/MB/MiB (1024²)")
    size = Fraction(number) * multiplier
    if size <= 0:
        raise MedyateError(f"{what} {text!r} must be more than 0 bytes")
    if size.denominator != 1:
        raise MedyateError(f"{what} {text!r} is {float(size):g} bytes, not a whole number")
    if size > MAX_SIZE:
        raise MedyateError(f"{what} {text!r} is {format_size(int(size))}, above the 1 GiB of RAM "
                           "a Cortex-M can address (its external-RAM region); give at most 1024MB")
    return int(size)


def format_size(size: int) -> str:
    """``307200`` → ``'300.0 KiB (307200 B)'``."""
    if size >= 1024**2:
        return f"{size / 1024**2:.2f} MiB ({size} B)"
    if size >= 1024:
        return f"{size / 1024:.1f} KiB ({size} B)"
    return f"{size} B"
