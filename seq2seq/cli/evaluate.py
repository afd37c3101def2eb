"""``seq2seq evaluate RUN_DIR``: score any trained run on held-out data (the run's task decides how)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UserError
from ..evaluation import EvaluateRequest
from ..heads import head_of
from .app import DEVICE_HELP, app, check_output_dir, cli_output, user_errors

SPLITS = ("train", "dev", "test")


@app.command()
@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`, or "
                                   "its export (`seq2seq export`)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Held-out data in the config's "
                                        "format (TSV/CSV/JSONL/text) [the config's --split]."),
    split: str = typer.Option("test", help="Config data split when no file is given."),
    src: Optional[Path] = typer.Option(None, help="Translation: source sentences, one per line."),
    ref: Optional[Path] = typer.Option(None, help="Translation: references, one per line."),
    beam_size: Optional[int] = typer.Option(None, help="Translation: 1 = greedy [config]."),
    length_penalty: Optional[float] = typer.Option(None, help="Translation: GNMT alpha [config]."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per batch."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Translation: mixed "
                                       "precision, bfloat16 on CPU, float16 on CUDA [config]."),
    output_dir: Optional[Path] = typer.Option(None, help="Where metrics.json goes "
                                              "[RUN_DIR/eval/<split or file>]."),
    report: Optional[Path] = typer.Option(None, help="Also write report.md, report.html and "
                                          "metrics.json into this directory."),
    compare_run: Optional[Path] = typer.Option(None, help="Translation report: compare with "
                                               "another run on the same data (paired bootstrap)."),
    compare_beam_size: Optional[int] = typer.Option(None, help="Translation report: compare "
                                                    "with this run at another beam size."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Score a trained model: BLEU/chrF/TER (translation), accuracy/F1 (classification),
    perplexity (language model). Writes metrics.json (and a report with --report)."""
    request = EvaluateRequest(run_dir=run_dir, data=data, split=split, src=src, ref=ref,
                              beam_size=beam_size, length_penalty=length_penalty,
                              batch_size=batch_size, amp=amp, checkpoint=checkpoint,
                              device=device, output_dir=output_dir, report=report,
                              compare_run=compare_run, compare_beam_size=compare_beam_size)
    run_evaluation(request)


@app.command()
@user_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
    data: Optional[Path] = typer.Option(None, "--data", help="Held-out data in the config's "
                                        "format [the config's test split, else dev]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", "--output-dir",
                                          help="Report directory [RUN_DIR/report]."),
    split: Optional[str] = typer.Option(None, help="Config data split when no file is given "
                                        "[test if the config names one, else dev]."),
    compare_beam_size: Optional[int] = typer.Option(None, help="Translation: also decode with "
                                                    "this beam size and compare."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Write the report of a finished training run: evaluation on held-out data, training
    curves, model, data and settings (report.md, report.html, metrics.json)."""
    from ..pretrained import open_run

    _refuse_export(run_dir, "report")
    _, config = open_run(run_dir)
    if split is None:
        split = "test" if config.data.test else "dev"
    if split not in SPLITS:
        raise UserError(f"--split {split!r} is not valid (choices: {', '.join(SPLITS)})")
    held_out = split == "dev" and config.data.dev_fraction > 0  # the tail of the training data
    if data is None and not (getattr(config.data, split) or held_out):
        raise UserError(f"{run_dir}: the config names no {split} data; give --data FILE or "
                        "another --split")
    directory = output or run_dir / "report"
    request = EvaluateRequest(run_dir=run_dir, data=data, split=split, device=device,
                              output_dir=directory, report=directory,
                              compare_beam_size=compare_beam_size)
    run_evaluation(request)


@app.command()
@user_errors
def diagnose(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data in the config's format "
                                        "[the config's dev split]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", "--output-dir",
                                          help="Where the figure, report and metrics.json go "
                                          "[RUN_DIR/diagnose]."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Gradient flow through time: ||dLoss/dx_t|| at each input position, for this model and
    for freshly initialised RNN, GRU and LSTM models of the same size on the same data."""
    from ..pretrained import run_task
    from ..runtime import configure_threads

    configure_threads(0)
    task = run_task(run_dir)
    _refuse_export(run_dir, "diagnose")
    request = EvaluateRequest(run_dir=run_dir, data=data, split="dev", device=device,
                              output_dir=output or run_dir / "diagnose")
    check_output_dir(request.out_dir(), "--output")
    head_of(task).load("diagnose")(request, cli_output())


def _refuse_export(run_dir: Path, what: str | None) -> None:
    """Reports and diagnoses look inside the PyTorch model: an ONNX export cannot serve them."""
    from ..export.folder import is_export_dir

    if what is not None and is_export_dir(run_dir):
        raise UserError(f"{what} needs the run directory (it looks inside the PyTorch model); "
                        f"{run_dir} is an ONNX export")


def run_evaluation(request: EvaluateRequest) -> dict[str, Any]:
    """Check the request and hand it to the evaluation of the run's task."""
    from ..pretrained import run_task
    from ..runtime import configure_threads

    if request.split not in SPLITS:
        raise UserError(f"--split {request.split!r} is not valid (choices: {', '.join(SPLITS)})")
    if request.batch_size is not None and request.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {request.batch_size}")
    if request.beam_size is not None and request.beam_size < 1:
        raise UserError(f"--beam-size must be >= 1, got {request.beam_size}")
    if request.length_penalty is not None and not request.length_penalty >= 0:
        raise UserError(f"--length-penalty must be a number >= 0, got {request.length_penalty}")
    check_output_dir(request.out_dir())
    check_output_dir(request.report, "--report")
    configure_threads(0)
    run_dir, src, ref = request.run_dir, request.src, request.ref
    task = run_task(run_dir)
    _refuse_export(run_dir, "--report" if request.report is not None else None)
    if task != "translation" and (request.compare_run or request.compare_beam_size):
        raise UserError("--compare-run/--compare-beam-size are for translation runs; "
                        f"{run_dir} is a {task} run")
    decoding = [name for name, value in [("--beam-size", request.beam_size),
                                         ("--length-penalty", request.length_penalty),
                                         ("--amp", request.amp)] if value is not None]
    if task != "translation" and decoding:
        raise UserError(f"{'/'.join(decoding)}: for translation runs (decoding); {run_dir} is "
                        f"a {task} run")
    if task != "translation" and (src or ref):
        raise UserError(f"--src/--ref are for translation runs; {run_dir} is a {task} run "
                        "(use --data FILE)")
    return head_of(task).load("evaluate")(request, cli_output())
