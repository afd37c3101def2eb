"""Scoring a language model on held-out text (perplexity, loss, bits per character), and its
gradient flow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from . import QUIET, EvaluateRequest, Output, finish_diagnosis

if TYPE_CHECKING:
    from ..data.language_model import LMTexts
    from ..generator import Generator


def evaluate(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Perplexity, loss and bits per character of held-out text; writes metrics.json."""
    from ..files import atomic_write_text
    from ..generator import Generator

    generator = Generator.from_pretrained(request.run_dir, device=request.device,
                                          weights=request.checkpoint)
    texts, files = _held_out(request, generator, out)
    started = time.perf_counter()
    if request.batch_size is not None and request.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {request.batch_size}")
    scores = generator.score(texts, request.batch_size)
    seconds = time.perf_counter() - started
    out.result(f"perplexity {scores.ppl:.2f}, loss {scores.loss:.4f} nats/token, "
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
        from ..reporting.language_model import write_generation_report

        metrics = write_generation_report(request.report, generator, texts.where, files, texts,
                                          metrics, seconds)
        out.note(f"wrote {request.report / 'report.html'} and {request.report / 'report.md'}")
    directory = request.out_dir()
    atomic_write_text(directory / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    out.note(f"wrote {directory / 'metrics.json'}")
    return metrics


def _held_out(request: EvaluateRequest, generator: Generator, out: Output
              ) -> tuple[LMTexts, list[Path]]:
    """(the texts, the files they came from) of --data or the config's split."""
    from ..data.language_model import load_split, load_texts

    data = generator.config.data
    if request.data is not None:
        texts = load_texts(data, str(request.data))
        if len(texts) == 0 or not any(t.strip() for t in texts.texts["text"]):
            raise UserError(f"{request.data}: no text to evaluate")
        return texts, [request.data]
    split = request.split
    if split == "test" and not data.test:
        split = "dev"  # e.g. tiny Shakespeare: its only held-out text is the dev part
        out.note("note: data.test is not set in the run's config; evaluating on the "
                 "dev split (or give --data FILE)")
        request.split = split  # so the results are filed under eval/dev, not eval/test
    path = getattr(data, split) or data.train  # a dev split may be the tail of train
    texts = load_split(data, split)
    if len(texts) == 0:
        raise UserError(f"{texts.where}: no text to evaluate")
    return texts, [Path(path)]


def diagnose(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Gradient flow through time of a language model, beside fresh models of each cell type."""
    from ..generator import Generator
    from ..reporting.language_model import FLOW_POSITION, FLOW_WHERE, lm_gradient_flow, tokenized

    generator = Generator.from_pretrained(request.run_dir, device=request.device,
                                          weights=request.checkpoint)
    texts, _ = _held_out(request, generator, out)
    flows = lm_gradient_flow(generator, tokenized(generator, texts))
    return finish_diagnosis(request, out, flows, FLOW_POSITION, FLOW_WHERE,
                            generator.config.training.clip_grad_norm, texts.where)
