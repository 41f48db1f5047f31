"""What the C runtime and Python share, from one source each.

- The compiler flags every build of the engine takes (:data:`REQUIRED_CFLAGS`): rendered into the
  generated Makefile, used by the host serial build and by the tests' C builds.
- The status codes and other constants, read from the runtime's headers (:func:`enum_constants`,
  :func:`define_constants`), and the layout of the C structs Python reads (:func:`struct_fields`,
  :func:`ctypes_struct`): the headers in ``firmware/`` are the source, never typed again here.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import cache

from medyate_mcu.resources import data_dir

# C99, warnings as errors, and IEEE float as written (no fast-math, no contraction into fused
# multiply-add, sqrtf as the instruction): every build of the engine, host or Cortex-M, computes
# the same bits (docs/design.md §10). Applied after the user's CFLAGS so nothing there undoes them.
REQUIRED_CFLAGS: tuple[str, ...] = (
    "-std=c99", "-Wall", "-Wextra", "-Werror", "-fno-fast-math", "-fno-math-errno",
    "-ffp-contract=off",
)

_FIXED = {"uint8_t": ctypes.c_uint8, "uint16_t": ctypes.c_uint16, "uint32_t": ctypes.c_uint32,
          "uint64_t": ctypes.c_uint64, "int8_t": ctypes.c_int8, "int16_t": ctypes.c_int16,
          "int32_t": ctypes.c_int32, "int64_t": ctypes.c_int64, "float": ctypes.c_float}


def header_text(relative: str) -> str:
    """A header of the runtime, e.g. ``"kernels/mdy_status.h"`` (below ``firmware/``)."""
    return (data_dir("firmware") / relative).read_text()


def _strip_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", " ", text, flags=re.S))


@cache
def enum_constants(relative: str) -> dict[str, int]:
    """Every ``NAME = value`` of the header's enums, in order (values are integer literals,
    possibly negative or hexadecimal; an enumerator without one follows the previous)."""
    constants: dict[str, int] = {}
    for body in re.findall(r"\benum\b[^{;]*\{(.*?)\}", _strip_comments(header_text(relative)),
                           flags=re.S):
        value = -1
        for item in (part.strip() for part in body.split(",")):
            if not item:
                continue
            name, _, literal = (s.strip() for s in item.partition("="))
            value = int(literal.strip("()").rstrip("uU"), 0) if literal else value + 1
            constants[name] = value
    return constants


@cache
def define_constants(relative: str) -> dict[str, int]:
    """Every ``#define NAME literal`` of the header whose value is one integer literal."""
    found = re.findall(r"^\s*#define\s+(\w+)\s+\(?\s*(-?(?:0[xX][0-9a-fA-F]+|\d+))[uU]?\s*\)?\s*$",
                       _strip_comments(header_text(relative)), flags=re.M)
    return {name: int(literal, 0) for name, literal in found}


@dataclass(frozen=True)
class CField:
    """One member of a C struct: ``ctype`` is a fixed-width type name, ``pointer`` for any data
    or function pointer (``ctype`` then names what it points to, or ``"function"``)."""

    name: str
    ctype: str
    count: int = 1
    pointer: bool = False


_FUNCTION = re.compile(r"^[\w\s]+\(\s*\*\s*(\w+)\s*\)\s*\(.*\)$", re.S)
_DECLARATOR = re.compile(r"^(\**)\s*(\w+)\s*(?:\[\s*(\d+)\s*\])?$")


@cache
def struct_fields(relative: str, typedef: str) -> tuple[CField, ...]:
    """The members of ``typedef struct { ... } typedef;`` (or of ``struct tag { ... };`` after
    ``typedef struct tag typedef;``) in the header, in order."""
    text = _strip_comments(header_text(relative))
    name = re.escape(typedef)
    tag = re.search(r"typedef\s+struct\s+(\w+)\s+" + name + r"\s*;", text)
    pattern = (r"\bstruct\s+" + re.escape(tag.group(1)) + r"\s*\{([^{}]*)\}\s*;" if tag
               else r"typedef\s+struct\s*\w*\s*\{([^{}]*)\}\s*" + name + r"\s*;")
    match = re.search(pattern, text, flags=re.S)
    if match is None:
        raise LookupError(f"no struct {typedef} in firmware/{relative}")
    fields: list[CField] = []
    for declaration in (d.strip() for d in match.group(1).split(";")):
        if not declaration:
            continue
        function = _FUNCTION.match(declaration)
        if function:
            fields.append(CField(function.group(1), "function", pointer=True))
            continue
        base = re.match(r"^((?:const\s+)?\w+)\s*(.*)$", declaration, flags=re.S)
        if base is None:
            raise LookupError(f"{typedef}: cannot read {declaration!r}")
        ctype = base.group(1).removeprefix("const").strip()
        for declarator in (d.strip() for d in base.group(2).split(",")):
            parts = _DECLARATOR.match(declarator)
            if parts is None:
                raise LookupError(f"{typedef}: cannot read {declarator!r}")
            stars, name, count = parts.groups()
            if not stars and ctype not in _FIXED:
                raise LookupError(f"{typedef}.{name}: {ctype} is not a fixed-width type")
            fields.append(CField(name, ctype, int(count or 1), pointer=bool(stars)))
    return tuple(fields)


def _ctype(field: CField) -> type:
    if field.pointer:
        return ctypes.POINTER(_FIXED[field.ctype]) if field.ctype in _FIXED else ctypes.c_void_p
    base = _FIXED[field.ctype]
    return base * field.count if field.count > 1 else base


@cache
def ctypes_struct(relative: str, typedef: str) -> type[ctypes.Structure]:
    """A ctypes mirror of the struct, built from the header (natural alignment, as C lays it)."""
    fields = [(f.name, _ctype(f)) for f in struct_fields(relative, typedef)]
    return type(typedef, (ctypes.Structure,), {"_fields_": fields})


def status_codes() -> dict[str, int]:
    """The runtime's one status type, ``mdy_status_t`` (``firmware/kernels/mdy_status.h``)."""
    return enum_constants("kernels/mdy_status.h")


SAMPLE_CTYPES = {"float32": "float", "uint8": "uint8_t", "int8": "int8_t"}  # stored samples


def sample_format_enum(name: str) -> str:
    """The ``mdy_sample_format_t`` enumerator of a stored-sample format ("int8" ->
    ``MDY_SAMPLE_INT8``; ``firmware/runtime/sample.h``)."""
    enumerator = f"MDY_SAMPLE_{name.upper()}"
    if enumerator not in enum_constants("runtime/sample.h"):
        raise KeyError(f"runtime/sample.h has no {enumerator}")
    return enumerator


def sample_format_code(name: str) -> int:
    """The wire value of a stored-sample format (READY's sample_format)."""
    return enum_constants("runtime/sample.h")[sample_format_enum(name)]
