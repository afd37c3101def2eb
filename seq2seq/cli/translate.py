"""``seq2seq translate RUN_DIR``: translate sentences from arguments, a file or stdin."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import (
    DEVICE_HELP,
    app,
    check_output_file,
    console,
    read_inputs,
    user_errors,
    write_output,
)


@app.command()
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`, or "
                                   "its export (`seq2seq export`)."),
    sentences: Optional[list[str]] = typer.Argument(None, help="Sentences to translate."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i",
                                              help="One sentence per line [stdin]."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here [stdout]."),
    beam_size: Optional[int] = typer.Option(None, help="1 = greedy [config]."),
    n_best: Optional[int] = typer.Option(None, help="Hypotheses per sentence, with scores."),
    length_penalty: Optional[float] = typer.Option(None, help="GNMT alpha [config]."),
    max_length_ratio: Optional[float] = typer.Option(None, help="Output length / source."),
    min_length: Optional[int] = typer.Option(None, help="Minimum output tokens."),
    no_repeat_ngram: Optional[int] = typer.Option(None, help="Block repeated n-grams."),
    batch_size: Optional[int] = typer.Option(None, help="Sentences per batch [config]."),
    batch_tokens: Optional[int] = typer.Option(None, help="Or: source tokens per batch."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision: bfloat16 "
                                       "on CPU, float16 on CUDA [config; auto: where measured faster]."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Translate sentences from arguments, a file or stdin; one output line per input line."""
    from ..runtime import configure_threads
    from ..translator import Translator

    check_output_file(output, input_file=input_file)
    configure_threads(0)
    lines = read_inputs(sentences, input_file)
    translator = Translator.from_pretrained(run_dir, device=device, weights=checkpoint)
    results = translator.translate_n_best(
        lines, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty,
        max_length_ratio=max_length_ratio, min_length=min_length,
        no_repeat_ngram=no_repeat_ngram, batch_size=batch_size, batch_tokens=batch_tokens,
        amp=amp)
    precision = translator.precision
    assert precision is not None  # set by translate_n_best
    if precision.auto:
        console.print(precision.line, markup=False, highlight=False)
    if translator.truncated:
        console.print(f"note: {translator.truncated} sentence(s) longer than "
                      f"{translator.config.data.max_src_length} tokens were truncated")
    if translator.min_length_capped:
        console.print(f"note: for {translator.min_length_capped} sentence(s) --min-length is "
                      "more than the output length allowed (--max-length-ratio x source length "
                      "+ max_length_extra); they end at that limit instead")
    if n_best is None:
        text = "".join(hypotheses[0].text + "\n" for hypotheses in results)
    else:
        text = "".join(f"{i}\t{t.score:.4f}\t{t.text}\n"
                       for i, hyps in enumerate(results) for t in hyps)
    write_output(text, output)
