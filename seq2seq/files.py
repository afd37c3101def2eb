"""Reading text files line by line, and writing files so that a crash at any moment leaves
the old file or the new one, never half.

Temporary files and directories are created private (0600 / 0700) by the standard library;
everything written here ends with the permissions an ordinary ``open`` or ``mkdir`` would
give (0666 / 0777 less the process's umask), so a run can be shared with other users.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def read_text_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file, split at "\\n" only; a decoding error names the line."""
    if not Path(path).is_file():
        raise UserError(f"file not found: {path}")
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as err:
                raise UserError(f"{path} line {number}: not valid UTF-8 (byte "
                                f"0x{raw[err.start]:02x} at column {err.start + 1})") from None
    return lines


def current_umask() -> int:
    """The process's umask (reading it means setting it: put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(path: Path) -> None:
    """Give ``path`` what ``open``/``mkdir`` would have: 0666 or 0777 less the umask."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        normal_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory + rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: Path, prefix: str = ".partial_") -> Iterator[Path]:
    """A temporary directory beside ``path`` to fill; it replaces ``path`` as a whole when the
    block ends without an exception, and is removed otherwise."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    except OSError as err:
        raise UserError(f"{path}: cannot write a folder there ({err.strerror})") from None
    try:
        yield tmp
        for child in tmp.iterdir():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
            normal_permissions(child)
        normal_permissions(tmp)
        if path.exists():  # the same step saved again (e.g. a resumed run's first save)
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_temporaries(directory: Path, patterns: tuple[str, ...] = (".*.tmp", ".partial_*"),
                       keep: Callable[[Path], bool] = lambda path: False) -> list[Path]:
    """Delete what a process killed in the middle of a write left in ``directory``."""
    removed: list[Path] = []
    if not Path(directory).is_dir():
        return removed
    for pattern in patterns:
        for stale in Path(directory).glob(pattern):
            if keep(stale):
                continue
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


TEMPORARY = re.compile(r"\..*\.tmp|\.partial_.*")  # what atomic writes leave while they work
# The files seq2seq's commands write into an output folder (``eval/``, ``report/``,
# ``diagnose/``) at any depth: metrics, hypotheses, predictions, reports and their figures.
OUTPUT_FILES = re.compile(r"(.*/)?(report\.(md|html)|metrics\.json|hypotheses\.txt|"
                          r"predictions\.tsv|figures/[^/]+\.png)")


def foreign_entries(directory: Path, top: re.Pattern[str],
                    below: dict[str, re.Pattern[str]]) -> list[str]:
    """The paths in ``directory`` (relative, sorted) that seq2seq did not write, so that
    replacing the folder would delete a user's file: a top-level name ``top`` does not match,
    or a file under a top-level folder whose path (relative to that folder) its pattern in
    ``below`` does not match. Folders are judged by their files; temporaries always pass."""
    foreign: list[str] = []
    for entry in sorted(Path(directory).iterdir()):
        if not top.fullmatch(entry.name):
            foreign.append(entry.name)
        elif entry.is_dir() and not entry.is_symlink() and entry.name in below:
            for path in sorted(entry.rglob("*")):
                relative = path.relative_to(entry).as_posix()
                if (path.is_dir() and not path.is_symlink()) or any(
                        TEMPORARY.fullmatch(part) for part in relative.split("/")):
                    continue
                if not below[entry.name].fullmatch(relative):
                    foreign.append(f"{entry.name}/{relative}")
    return foreign
