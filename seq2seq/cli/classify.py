"""``seq2seq classify RUN_DIR``: classify texts from arguments, a file or stdin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .app import (
    DEVICE_HELP,
    app,
    check_output_file,
    console,
    read_inputs,
    user_errors,
    write_output,
)

FORMATS = ("tsv", "jsonl")


@app.command()
@user_errors
def classify(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`, or "
                                   "its export (`seq2seq export`)."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i",
                                              help="One text per line [stdin]."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here [stdout]."),
    output_format: str = typer.Option("tsv", "--format", help="tsv: label<TAB>probability "
                                      "(then the next labels with --top-k); jsonl: one JSON "
                                      "object per text."),
    top_k: int = typer.Option(1, "--top-k", help="Most probable labels per text (at most "
                              "all of them)."),
    batch_size: int = typer.Option(64, help="Texts per batch."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Classify texts from arguments, a file or stdin; one output line per input line."""
    from ..classifier import Classifier
    from ..runtime import configure_threads

    if output_format not in FORMATS:
        raise UserError(f"--format {output_format!r} is not valid (choices: {', '.join(FORMATS)})")
    if top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    check_output_file(output, input_file=input_file)
    configure_threads(0)
    lines = read_inputs(texts, input_file)
    classifier = Classifier.from_pretrained(run_dir, device=device, weights=checkpoint)
    predictions = classifier.predict(lines, top_k=top_k, batch_size=batch_size)
    if classifier.truncated:
        console.print(f"note: {classifier.truncated} text(s) longer than "
                      f"{classifier.config.data.max_length} tokens were truncated "
                      f"({classifier.config.data.truncation})")
    if output_format == "tsv":
        text = "".join("\t".join(f"{label}\t{p:.4f}" for label, p in found.top) + "\n"
                       for found in predictions)
    else:
        text = "".join(json.dumps({"text": line, "label": found.label,
                                   "probability": round(found.probability, 6),
                                   "top": [{"label": label, "probability": round(p, 6)}
                                           for label, p in found.top]},
                                  ensure_ascii=False) + "\n"
                       for line, found in zip(lines, predictions))
    write_output(text, output)
