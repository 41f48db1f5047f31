"""Pieces shared by the commands: error reporting, parameter types, model loading."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from medyate_mcu.boards import all_boards
from medyate_mcu.errors import MedyateError
from medyate_mcu.graph import Graph, load_onnx
from medyate_mcu.outputs import os_error
from medyate_mcu.toolchain.compile import AUTO, model_path
from medyate_mcu.units import parse_size


class MedyateGroup(click.Group):
    """A click group that turns :class:`MedyateError` (and a file-system failure no command
    caught) into one ``error:`` line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MedyateError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"error: {os_error(exc, 'use', exc.filename or 'a file')}", err=True)
            ctx.exit(1)




class SizeType(click.ParamType):
    """A memory size: ``300kB``, ``300KiB``, ``0.5MB``, ``307200`` (bytes); with ``allow_auto``,
    also ``auto``."""

    name = "SIZE"

    def __init__(self, allow_auto: bool = False) -> None:
        self.allow_auto = allow_auto

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        if self.allow_auto and str(value).strip().lower() == AUTO:
            return AUTO
        try:
            return parse_size(str(value), what=param.name if param and param.name else "size")
        except MedyateError as exc:
            self.fail(str(exc), param, ctx)


class BoardType(click.ParamType):
    """The name of a board in boards/ (see ``medyate-mcu boards``)."""

    name = "BOARD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        boards = all_boards()
        if value not in boards:
            self.fail(f"unknown board {value!r}; valid boards: {', '.join(boards)}", param, ctx)
        return str(value)


MODEL_ARGUMENT = click.argument(
    "model", required=False, type=click.Path(path_type=Path, dir_okay=False)
)


def load_model(path: Path | None) -> Graph:
    """Import ``path``, or the bundled demo model when no path is given."""
    return load_onnx(model_path(path))


def console() -> Console:
    """A console that does not wrap tables when output is not a terminal."""
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)
