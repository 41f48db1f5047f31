"""Pieces shared by the commands: error reporting, parameter types, model loading."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
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
from medyate_mcu.zoo import BUNDLED_MODELS, DEFAULT_MODEL_NAME, bundled_model_path


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


def bundled_names() -> str:
    """The bundled models' names, the default marked, for help texts and errors."""
    return ", ".join(f"{name} (default)" if name == DEFAULT_MODEL_NAME else name
                     for name in BUNDLED_MODELS)


class ModelType(click.ParamType):
    """MODEL: an ONNX file, or when no such file exists the name of a bundled model. A missing
    path (a folder in it, or an ``.onnx`` suffix) is left for the loader to report."""

    name = "MODEL"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Path:
        path = Path(value)
        if path.is_dir():
            self.fail(f"{str(value)!r} is a directory, not a model file", param, ctx)
        if path.is_file() or path.suffix == ".onnx" or len(path.parts) > 1:
            return path
        bundled = bundled_model_path(str(value))
        if bundled is not None:
            return bundled
        raise MedyateError(f"no model file or bundled model {str(value)!r}; bundled models: "
                           f"{bundled_names()}")


def _model_argument(command: Callable[..., Any]) -> Callable[..., Any]:
    """The optional MODEL argument, and a paragraph on it (the bundled names) in the help."""
    note = (f"MODEL is an ONNX file or the name of a bundled model: {bundled_names()} "
            "(see docs/panel.md).")
    command.__doc__ = f"{inspect.cleandoc(command.__doc__ or '')}\n\n{note}"
    return click.argument("model", required=False, type=ModelType())(command)


MODEL_ARGUMENT = _model_argument


def load_model(path: Path | None) -> Graph:
    """Import ``path`` (a bundled model's name is already resolved to its file by
    :class:`ModelType`), or the bundled demo model when no path is given."""
    return load_onnx(model_path(path))


def console() -> Console:
    """A console that does not wrap tables when output is not a terminal."""
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)
