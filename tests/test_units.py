"""Memory sizes as docs/design.md §9 defines them.

Plain = bytes, k/kB/KB/KiB = 1024, M/MB/MiB = 1024².
"""

from __future__ import annotations

import pytest

from medyate_mcu.errors import MedyateError
from medyate_mcu.units import format_size, parse_size


@pytest.mark.parametrize(("text", "size"), [
    ("300kB", 307200), ("300KiB", 307200), ("300KB", 307200), ("300k", 307200),
    ("0.5MB", 524288), ("1M", 1048576), ("2MiB", 2097152), ("307200", 307200),
    ("307200B", 307200), (" 64 kB ", 65536), ("1.5k", 1536), (".25MB", 262144),
])
def test_accepted_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "reason"), [
    ("-1", "not a memory size"), ("abc", "not a memory size"), ("0", "more than 0"),
    ("0kB", "more than 0"), ("", "not a memory size"), ("12GB", "unknown unit 'GB'"),
    ("1.3", "not a whole number"), ("300 k B", "not a memory size"), ("1e5", "not a memory size"),
])
def test_rejected_sizes(text: str, reason: str) -> None:
    with pytest.raises(MedyateError, match=reason) as info:
        parse_size(text, what="budget")
    assert str(info.value).startswith(f"budget {text!r}")


def test_format_size() -> None:
    assert format_size(307200) == "300.0 KiB (307200 B)"
    assert format_size(100) == "100 B"
