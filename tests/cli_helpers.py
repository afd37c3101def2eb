"""Running the Typer app in-process, and what every bad-input test checks of its output."""

from __future__ import annotations

from typer.testing import CliRunner

from seq2seq.cli import app

runner = CliRunner()


def run_cli(*args, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_user_error(result, *words: str) -> str:
    """Exit status 2 and one line ``error: ...`` containing ``words``; no traceback."""
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]
