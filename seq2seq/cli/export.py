"""``seq2seq export RUN_DIR --format onnx --output DIR``: a trained model as ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UserError
from .app import app, check_output_dir, console, user_errors

FORMATS = ("onnx",)


@app.command()
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
    output: Path = typer.Option(..., "--output", "-o", help="The export folder to write."),
    export_format: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    overwrite: bool = typer.Option(False, help="Replace an earlier export in --output."),
) -> None:
    """Export the run's model to a self-contained folder: ONNX graphs, tokenizer, labels, a
    manifest and a README on driving the graphs; translate/classify/generate/evaluate run it
    with ONNX Runtime."""
    from ..export.run import export_run

    if export_format not in FORMATS:
        raise UserError(f"--format {export_format!r} is not valid (choices: {', '.join(FORMATS)})")
    check_output_dir(output, "--output")
    written = export_run(run_dir, output, overwrite=overwrite)
    console.print(f"wrote {written}", markup=False, highlight=False)
