"""``seq2seq generate RUN_DIR``: text from a language model, streamed as it is produced."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import UserError
from .app import DEVICE_HELP, app, console, user_errors

FORMATS = ("text", "jsonl")
SAMPLE_SEPARATOR = "-" * 40  # between samples in text format


@app.command()
@user_errors
def generate(
    run_dir: Path = typer.Argument(..., help="A language-model run made by `seq2seq train`, "
                                   "or its export (`seq2seq export`)."),
    prompt: str = typer.Option("", "--prompt", "-p",
                               help="Text to continue [empty: start from the start symbol]."),
    max_tokens: Optional[int] = typer.Option(None, help="Tokens to generate at most [config]."),
    temperature: Optional[float] = typer.Option(None, help="> 0; lower is more conservative "
                                                "[config]."),
    top_k: Optional[int] = typer.Option(None, help="Sample among the k most probable tokens "
                                        "(0 = all) [config]."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling: the smallest set of "
                                          "tokens with this much probability, in (0, 1] "
                                          "[config]."),
    greedy: Optional[bool] = typer.Option(None, "--greedy/--sample",
                                          help="Most probable token at every step, or sample "
                                          "[config]."),
    beam_size: Optional[int] = typer.Option(None, help="> 1: beam search for the most "
                                            "probable continuations [config]."),
    num_samples: Optional[int] = typer.Option(None, help="Texts to generate [config]."),
    seed: Optional[int] = typer.Option(None, help="Random seed: the same seed gives the same "
                                       "text [a fresh one]."),
    condition: Optional[str] = typer.Option(None, help="Conditioned models: the label (or "
                                            "feature vector) to generate for."),
    output_format: str = typer.Option("text", "--format", help="text | jsonl (one JSON object "
                                      "per sample, with its log-probability and seed)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    threads: int = typer.Option(0, help="CPU threads; 0 = 1 for a single sample (its small "
                                "matrix products run faster on one thread), else every core."),
) -> None:
    """Generate text with a language model; in text format one sample is printed as it is
    produced. Stops at end-of-sequence or after --max-tokens."""
    from ..generator import Generator, UnknownSymbolsWarning
    from ..runtime import configure_threads

    if output_format not in FORMATS:
        raise UserError(f"--format {output_format!r} is not valid (choices: {', '.join(FORMATS)})")
    if threads < 0:
        raise UserError(f"--threads must be >= 0 (0 = automatic), got {threads}")
    generator = Generator.from_pretrained(run_dir, device=device, weights=checkpoint)
    options: dict[str, Any] = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   greedy=greedy, beam_size=beam_size, num_samples=num_samples)
    chosen = generator.generation_options(**options)  # bad options fail before any output
    one_stream = chosen.greedy or (chosen.num_samples == 1 and chosen.beam_size == 1)
    configure_threads(threads or (1 if one_stream else 0))
    streaming = output_format == "text" and chosen.num_samples == 1
    started: list[bool] = []  # the prompt is printed with the first token: after every check has passed

    def on_token(sample: int, text: str) -> None:
        if not started:
            sys.stdout.write(prompt)
            started.append(True)
        sys.stdout.write(text)
        sys.stdout.flush()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownSymbolsWarning)
        results = generator.generate(prompt, seed=seed, condition=condition,
                                     on_token=on_token if streaming else None, **options)
    for message in dict.fromkeys(str(w.message) for w in caught):  # each once
        console.print(f"note: {message}", markup=False, highlight=False)
    if streaming:
        sys.stdout.write(("" if started else prompt) + "\n")
    elif output_format == "text":
        sys.stdout.write(f"\n{SAMPLE_SEPARATOR}\n".join(r.text for r in results) + "\n")
    else:
        for i, r in enumerate(results):
            row = {"sample": i, "prompt": prompt, "condition": condition, "text": r.text,
                   "continuation": r.continuation, "log_prob": round(r.log_prob, 4),
                   "tokens": r.tokens, "finished": r.finished, "seed": r.seed}
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    sys.stdout.flush()
