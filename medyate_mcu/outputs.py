"""Writing outputs all or nothing, and file-system failures as one error line.

Every command that writes files goes through here: a file is written beside its target and
renamed over it; a folder (the generated project) is filled in a sibling staging folder and
swapped in, keeping whatever the previous output held that the command did not write. Ctrl-C
or a failure (a full disk, a read-only file system) leaves the old output as it was.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medyate_mcu.errors import MedyateError

OWNED_FILES = ".medyate_files"  # what the command wrote into a folder, one path a line


def os_error(exc: OSError, action: str, path: Path | str) -> MedyateError:
    """``cannot write build/x.c: No space left on device``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename and str(exc.filename) != str(path) else None
    return MedyateError(f"cannot {action} {path}: {reason}" + (f" ({where})" if where else ""))


def umask_mode(mode: int = 0o777) -> int:
    """``mode`` less the process's umask (what ``mkdir`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _make_parent(path: Path) -> None:
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise MedyateError(f"cannot write {path}: {parent} is a file, not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MedyateError(f"cannot write {path}: a part of {parent} is a file, not a "
                           "folder") from None
    except OSError as exc:
        raise os_error(exc, "create the folder", parent) from None


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; what was written there replaces ``path`` when
    the block ends normally, and is removed otherwise."""
    _make_parent(path)  # a name of this process and thread: concurrent writers never collide
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        yield temporary
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise os_error(exc, "write", path) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(text)


def write_npz_atomic(path: Path, compress: bool = True, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` (``np.savez`` if not ``compress``) as :func:`atomic_file`."""
    save = np.savez_compressed if compress else np.savez
    with atomic_file(path) as temporary, temporary.open("wb") as handle:
        save(handle, **arrays)


@contextmanager
def _no_interrupt() -> Iterator[None]:
    """Holds back Ctrl-C (SIGINT) for the block, then delivers it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, object]] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: caught.append((number, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(*caught[0])


def _owned(folder: Path, fallback: set[str]) -> set[str]:
    try:
        return set((folder / OWNED_FILES).read_text().split("\n")) - {""}
    except OSError:
        return fallback  # an output of an older version: no list


def _keep_foreign(old: Path, staging: Path, owned: set[str], written: set[str]) -> None:
    """Hard-link (else copy) into ``staging`` every file of ``old`` the command did not write."""
    for root, dirs, files in os.walk(old):
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            source = Path(root) / name
            relative = source.relative_to(old).as_posix()
            if relative in owned or relative in written:
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                target.symlink_to(os.readlink(source))
                continue
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


def check_output_folder(output: Path, marker: str) -> None:
    """Refuse an ``output`` that is a file, a mount point, or a non-empty folder that holds no
    ``marker`` (not an earlier output of this command)."""
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise MedyateError(f"{output} exists and is not a folder; choose another -o folder")
    if not output.exists():
        return
    if os.path.ismount(output):
        raise MedyateError(f"{output} is a mount point, which cannot be replaced; give a folder "
                           "inside it")
    try:
        empty = not any(output.iterdir())
    except OSError as exc:
        raise os_error(exc, "read", output) from None
    if not empty and not (output / marker).is_file():
        raise MedyateError(f"{output} is not empty and was not written by medyate-mcu; "
                           "choose another -o folder")


def write_folder(output: Path, fill: Callable[[Path], None], marker: str) -> list[str]:
    """Fill a sibling staging folder with ``fill(staging)``, then put it in ``output``'s place.
    Files an earlier output held that the command did not write are kept. Returns what was
    written (paths relative to ``output``)."""
    check_output_folder(output, marker)
    _make_parent(output)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    except OSError as exc:
        raise os_error(exc, "write into", output.parent) from None
    try:
        staging.chmod(umask_mode())
        fill(staging)
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*")
                         if not p.is_dir())
        (staging / OWNED_FILES).write_text("\n".join([OWNED_FILES, *written]) + "\n")
        if output.exists():
            # an older output has no list: keep what the new one does not overwrite
            _keep_foreign(output, staging, _owned(output, {marker}), {*written, OWNED_FILES})
            _swap(output, staging)
        else:
            staging.rename(output)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise os_error(exc, "write", output) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _swap(output: Path, staging: Path) -> None:
    backup = output.with_name(f".{output.name}-old")
    shutil.rmtree(backup, ignore_errors=True)
    with _no_interrupt():
        output.rename(backup)
        try:
            staging.rename(output)
        except BaseException:
            backup.rename(output)
            raise
    shutil.rmtree(backup, ignore_errors=True)
