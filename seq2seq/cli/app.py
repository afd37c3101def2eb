"""The Typer app and what every command shares: error handling, console, reading inputs.

Every user mistake surfaces as ``error: <one line>`` on stderr and exit status 2, never a
traceback; Ctrl-C exits with status 130 (training saves a checkpoint first).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import DistributedError, UserError
from ..files import read_text_lines

if TYPE_CHECKING:
    from ..evaluation import Output

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  rich_markup_mode=None,  # help texts say "[config]" literally
                  help="Recurrent sequence models (RNN, GRU, LSTM): train, translate, classify, "
                       "generate and evaluate.")
console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs

DEVICE_HELP = "auto | cpu | cuda | cuda:N."


P = ParamSpec("P")
R = TypeVar("R")


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn UserError into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DistributedError as err:  # every process says what it saw (not only rank 0)
            console.quiet = False
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(1) from None
        except UserError as err:
            # escape: a message quotes user data ("[...]" in a label, a path, a JSON value).
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None
        except OSError as err:
            if err.filename is None:  # not about a file the user named: a bug, keep its traceback
                raise
            # A file or folder the user named cannot be read or written (permissions, a full
            # disk, a file where a folder should be): their machine, not our code, is at fault.
            console.print(f"[red]error:[/red] {escape(str(err.filename))}: "
                          f"{escape(err.strerror or type(err).__name__)}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def split_lines(text: str) -> list[str]:
    """Lines split at "\\n" only (with a "\\r" before it dropped), so output line i answers
    input line i: ``str.splitlines`` would also split at U+2028, U+0085, form feeds, ..."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.removesuffix("\r") for line in lines]


def read_stdin() -> list[str]:
    data = sys.stdin.buffer.read()
    try:
        return split_lines(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"standard input line {line}: not valid UTF-8") from None


def read_inputs(arguments: list[str] | None, input_file: Path | None) -> list[str]:
    """The texts to process: command-line arguments, else a file, else standard input."""
    if arguments and input_file is not None:
        raise UserError(f"texts given both as arguments and with --input {input_file}: "
                        "give one or the other")
    if arguments:
        for number, text in enumerate(arguments, start=1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # bytes the terminal's encoding could not decode
                raise UserError(f"text argument {number} is not valid UTF-8") from None
        return list(arguments)
    if input_file is not None:
        return read_text_lines(input_file)
    return read_stdin()


def write_output(text: str, output: Path | None) -> None:
    from ..files import atomic_write_text

    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(output, text)


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing folder at or above ``path``'s parent must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot write in {parent} (permission denied)")


def check_output_file(path: Path | None, option: str = "--output",
                      input_file: Path | None = None) -> None:
    """Before any work: ``path`` can be written as a file, and is not ``input_file``
    (the command's --input: writing the output there would destroy it)."""
    if path is None:
        return
    if (input_file is not None and path.exists() and input_file.exists()
            and os.path.samefile(path, input_file)):
        raise UserError(f"{option} {path} is the --input file: writing there would replace "
                        "what is being read; choose another output file")
    if str(path).endswith(("/", os.sep)) or path.is_dir():
        raise UserError(f"{option} {path}: expected a file name, got a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: the file is not writable")
    _writable_ancestor(path, option)


def check_output_dir(path: Path | None, option: str = "--output-dir") -> None:
    """Before any work: ``path`` is a folder that can be created or written to."""
    if path is None:
        return
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: cannot write in this folder (permission denied)")
        return
    _writable_ancestor(path, option)


def cli_output() -> Output:
    """Evaluation output for the terminal: figures on stdout, notes on stderr, tables when a
    person reads stdout (plain lines for a file or a pipe)."""
    from rich.console import Console

    from ..evaluation import Output

    return Output(result=typer.echo,
                  note=lambda text: console.print(text, markup=False, highlight=False),
                  table=Console(soft_wrap=True).print, tables=sys.stdout.isatty())
