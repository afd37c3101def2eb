"""``seq2seq translate RUN_DIR`` and the translation side of ``seq2seq evaluate``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .app import (DEVICE_HELP, EvaluateRequest, app, check_output_file, console,
                  finish_diagnosis, read_inputs, read_lines, user_errors, write_output)


@app.command()
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
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

    check_output_file(output)
    configure_threads(0)
    lines = read_inputs(sentences, input_file)
    translator = Translator.from_pretrained(run_dir, device=device, weights=checkpoint)
    results = translator.translate(
        lines, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty,
        max_length_ratio=max_length_ratio, min_length=min_length,
        no_repeat_ngram=no_repeat_ngram, batch_size=batch_size, batch_tokens=batch_tokens,
        amp=amp)
    if translator.precision.auto:
        console.print(translator.precision.line, markup=False, highlight=False)
    if translator.truncated:
        console.print(f"note: {translator.truncated} sentence(s) longer than "
                      f"{translator.config.data.max_src_length} tokens were truncated")
    if translator.min_length_capped:
        console.print(f"note: for {translator.min_length_capped} sentence(s) --min-length is "
                      "more than the output length allowed (--max-length-ratio x source length "
                      "+ max_length_extra); they end at that limit instead")
    if n_best is None:
        text = "".join(line + "\n" for line in results)
    else:
        text = "".join(f"{i}\t{t.score:.4f}\t{t.text}\n"
                       for i, hyps in enumerate(results) for t in hyps)
    write_output(text, output)


def evaluate_translation(request: EvaluateRequest) -> dict:
    """Translate a test set and score it with sacrebleu (BLEU, chrF, TER)."""
    from ..files import atomic_write_text
    from ..metrics.translation import score_translations
    from ..translator import Translator

    translator = Translator.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    config = translator.config
    sources, references, described, files = _read_test_data(request, config)
    options = dict(beam_size=request.beam_size, length_penalty=request.length_penalty,
                   batch_size=request.batch_size, amp=request.amp)
    started = time.perf_counter()
    hypotheses = translator.translate(sources, **options)
    seconds = time.perf_counter() - started
    decoding = translator.decoding_config(**options)
    scores = score_translations(hypotheses, references, config.evaluation.metrics,
                                config.evaluation.tokenize, config.evaluation.lowercase)
    for score in scores.values():
        typer.echo(score.text)
        typer.echo(f"  signature: {score.signature}")
    if translator.precision.auto:
        console.print(translator.precision.line, markup=False, highlight=False)
    typer.echo(f"{len(sources)} sentences in {seconds:.1f} s "
               f"({len(sources) / max(seconds, 1e-9):.1f} sentences/s), beam {decoding.beam_size}")
    metrics = {
        "task": "translation",
        "data": described,
        "sentences": len(sources),
        **{k: round(s.value, 4) for k, s in scores.items()},
        "signatures": {k: s.signature for k, s in scores.items()},
        "decoding": {"beam_size": decoding.beam_size, "length_penalty": decoding.length_penalty,
                     "max_length_ratio": decoding.max_length_ratio,
                     "precision": translator.precision.name},
        "seconds": round(seconds, 3),
        "truncated": translator.truncated,
    }
    out = request.out_dir()
    atomic_write_text(out / "hypotheses.txt", "".join(h + "\n" for h in hypotheses))
    if request.report is not None:
        from ..reporting.translation import write_translation_report

        comparison = _comparison(request, translator, sources)
        metrics = write_translation_report(request.report, translator, described, files, sources,
                                           references, hypotheses, metrics, seconds, comparison)
        console.print(f"wrote {request.report / 'report.html'} and {request.report / 'report.md'}")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    console.print(f"wrote {out / 'metrics.json'}")
    return metrics


def _read_test_data(request: EvaluateRequest, config):
    """(sources, references, description, files) of --src/--ref, --data or the config's split."""
    from ..data.corpus import load_parallel

    if (request.src is None) != (request.ref is None):
        raise UserError("give both --src and --ref, or neither (to use --data or a config split)")
    if request.src is not None:
        sources, references = read_lines(request.src), read_lines(request.ref)
        if len(sources) != len(references):
            raise UserError(f"{request.src} has {len(sources)} lines but {request.ref} has "
                            f"{len(references)}")
        described, files = f"{request.src} + {request.ref}", [request.src, request.ref]
    else:
        split = "test" if request.data else request.split
        data = _with_split(config.data, split, str(request.data)) if request.data else config.data
        described = str(request.data) if request.data else f"{split}: {getattr(data, split)}"
        texts = load_parallel(data, split, drop_empty=False)
        sources, references = texts["src"], texts["trg"]
        files = _split_files(data, split)
    if not sources:
        raise UserError(f"{described}: no sentences to evaluate")
    return sources, references, described, files


def diagnose_translation(request: EvaluateRequest) -> dict:
    """Gradient flow through time of a translator, beside fresh models of each cell type."""
    from ..reporting.translation import translation_gradient_flow
    from ..translator import Translator

    translator = Translator.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    sources, references, described, _ = _read_test_data(request, translator.config)
    flows = translation_gradient_flow(translator, sources, references)
    return finish_diagnosis(request, flows, "source token",
                            "the 32 longest source sentences (loss: the whole reference "
                            "translation, teacher-forced)",
                            translator.config.training.clip_grad_norm, described)


def _comparison(request: EvaluateRequest, translator, sources: list[str]):
    """The other system of a report's side-by-side comparison, if one was asked for."""
    from ..reporting.translation import Comparison
    from ..translator import Translator

    if request.compare_run is not None:
        other = Translator.from_pretrained(request.compare_run, device=request.device)
        return Comparison(str(request.compare_run),
                          other.translate(sources, batch_size=request.batch_size))
    if request.compare_beam_size is not None:
        return Comparison(f"beam {request.compare_beam_size}",
                          translator.translate(sources, beam_size=request.compare_beam_size,
                                               batch_size=request.batch_size))
    return None


def _with_split(data, split: str, path: str):
    import dataclasses

    return dataclasses.replace(data, **{split: path})


def _split_files(data, split: str) -> list[Path]:
    """The files a split was read from (two for a plain-text pair)."""
    path = Path(getattr(data, split))
    if path.is_file():
        return [path]
    return [Path(f"{path}.{data.src}"), Path(f"{path}.{data.trg}")]
