"""``seq2seq generate RUN_DIR`` and the language-model side of ``seq2seq evaluate``."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .app import DEVICE_HELP, EvaluateRequest, app, console, finish_diagnosis, user_errors

FORMATS = ("text", "jsonl")
SAMPLE_SEPARATOR = "-" * 40  # between samples in text format


@app.command()
@user_errors
def generate(
    run_dir: Path = typer.Argument(..., help="A language-model run made by `seq2seq train`."),
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
    options = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   greedy=greedy, beam_size=beam_size, num_samples=num_samples)
    chosen = generator.generation_options(**options)  # bad options fail before any output
    one_stream = chosen.greedy or (chosen.num_samples == 1 and chosen.beam_size == 1)
    configure_threads(threads or (1 if one_stream else 0))
    streaming = output_format == "text" and chosen.num_samples == 1
    started = []  # the prompt is printed with the first token: after every check has passed

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


def evaluate_language_model(request: EvaluateRequest) -> dict:
    """Perplexity, loss and bits per character of held-out text; writes metrics.json."""
    from ..files import atomic_write_text
    from ..generator import Generator

    generator = Generator.from_pretrained(request.run_dir, device=request.device,
                                          weights=request.checkpoint)
    texts, files = _held_out(request, generator)
    started = time.perf_counter()
    if request.batch_size is not None and request.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {request.batch_size}")
    scores = generator.score(texts, request.batch_size)
    seconds = time.perf_counter() - started
    typer.echo(f"perplexity {scores.ppl:.2f}, loss {scores.loss:.4f} nats/token, "
               f"{scores.bpc:.4f} bits/character ({scores.tokens:,} tokens, "
               f"{scores.characters:,} characters of {texts.where}) in {seconds:.1f} s")
    metrics = {
        "task": "language_model",
        "data": texts.where,
        "ppl": round(scores.ppl, 4),
        "loss": round(scores.loss, 5),
        "bpc": round(scores.bpc, 5),
        "tokens": scores.tokens,
        "characters": scores.characters,
        "seconds": round(seconds, 3),
    }
    if request.report is not None:
        from ..reporting.generation import write_generation_report

        metrics = write_generation_report(request.report, generator, texts.where, files, texts,
                                          metrics, seconds)
        console.print(f"wrote {request.report / 'report.html'} and {request.report / 'report.md'}")
    out = request.out_dir()
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    console.print(f"wrote {out / 'metrics.json'}")
    return metrics


def _held_out(request: EvaluateRequest, generator):
    """(the texts, the files they came from) of --data or the config's split."""
    from ..data.stream import load_split, load_texts

    data = generator.config.data
    if request.data is not None:
        texts = load_texts(data, str(request.data))
        if len(texts) == 0 or not any(t.strip() for t in texts.texts["text"]):
            raise UserError(f"{request.data}: no text to evaluate")
        return texts, [request.data]
    split = request.split
    if split == "test" and not data.test:
        split = "dev"  # e.g. tiny Shakespeare: its only held-out text is the dev part
        console.print("note: data.test is not set in the run's config; evaluating on the "
                      "dev split (or give --data FILE)")
    path = getattr(data, split) or data.train  # a dev split may be the tail of train
    texts = load_split(data, split)
    if len(texts) == 0:
        raise UserError(f"{texts.where}: no text to evaluate")
    return texts, [Path(path)]


def diagnose_language_model(request: EvaluateRequest) -> dict:
    """Gradient flow through time of a language model, beside fresh models of each cell type."""
    from ..generator import Generator
    from ..reporting.generation import FLOW_POSITION, FLOW_WHERE, lm_gradient_flow, tokenized

    generator = Generator.from_pretrained(request.run_dir, device=request.device,
                                          weights=request.checkpoint)
    texts, _ = _held_out(request, generator)
    flows = lm_gradient_flow(generator, tokenized(generator, texts))
    return finish_diagnosis(request, flows, FLOW_POSITION, FLOW_WHERE,
                            generator.config.training.clip_grad_norm, texts.where)
