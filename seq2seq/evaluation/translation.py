"""Scoring a translator on held-out data (sacrebleu BLEU, chrF, TER), and its gradient flow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..files import read_text_lines
from . import QUIET, EvaluateRequest, Output, finish_diagnosis

if TYPE_CHECKING:
    from ..config import Config, DataConfig
    from ..reporting.translation import Comparison
    from ..translator import Translator


def evaluate(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Translate a test set and score it with sacrebleu (BLEU, chrF, TER)."""
    from ..files import atomic_write_text
    from ..metrics.translation import score_translations
    from ..translator import Translator

    translator = Translator.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    config = translator.config
    sources, references, described, files = _read_test_data(request, config)
    options: dict[str, Any] = dict(beam_size=request.beam_size, length_penalty=request.length_penalty,
                   batch_size=request.batch_size, amp=request.amp)
    started = time.perf_counter()
    hypotheses = translator.translate(sources, **options)
    seconds = time.perf_counter() - started
    decoding = translator.decoding_config(**options)
    precision = translator.precision
    assert precision is not None  # set by translate
    scores = score_translations(hypotheses, references, config.evaluation.metrics,
                                config.evaluation.tokenize, config.evaluation.lowercase)
    for score in scores.values():
        out.result(score.text)
        out.result(f"  signature: {score.signature}")
    if precision.auto:
        out.note(precision.line)
    out.result(f"{len(sources)} sentences in {seconds:.1f} s "
               f"({len(sources) / max(seconds, 1e-9):.1f} sentences/s), beam {decoding.beam_size}")
    metrics = {
        "task": "translation",
        "data": described,
        "sentences": len(sources),
        **{k: round(s.value, 4) for k, s in scores.items()},
        "signatures": {k: s.signature for k, s in scores.items()},
        "decoding": {"beam_size": decoding.beam_size, "length_penalty": decoding.length_penalty,
                     "max_length_ratio": decoding.max_length_ratio,
                     "precision": precision.name},
        "seconds": round(seconds, 3),
        "truncated": translator.truncated,
    }
    directory = request.out_dir()
    atomic_write_text(directory / "hypotheses.txt", "".join(h + "\n" for h in hypotheses))
    if request.report is not None:
        from ..reporting.translation import write_translation_report

        comparison = _comparison(request, translator, sources)
        metrics = write_translation_report(request.report, translator, described, files, sources,
                                           references, hypotheses, metrics, seconds, comparison)
        out.note(f"wrote {request.report / 'report.html'} and {request.report / 'report.md'}")
    atomic_write_text(directory / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    out.note(f"wrote {directory / 'metrics.json'}")
    return metrics


def _read_test_data(request: EvaluateRequest, config: Config
                    ) -> tuple[list[str], list[str], str, list[Path]]:
    """(sources, references, description, files) of --src/--ref, --data or the config's split."""
    from ..data.translation import load_parallel

    if (request.src is None) != (request.ref is None):
        raise UserError("give both --src and --ref, or neither (to use --data or a config split)")
    if request.src is not None and request.ref is not None:
        sources, references = read_text_lines(request.src), read_text_lines(request.ref)
        if len(sources) != len(references):
            raise UserError(f"{request.src} has {len(sources)} lines but {request.ref} has "
                            f"{len(references)}")
        described, files = f"{request.src} + {request.ref}", [request.src, request.ref]
    else:
        split = "test" if request.data else request.split
        data = _with_split(config.data, split, str(request.data)) if request.data else config.data
        described = str(request.data) if request.data else f"{split}: {getattr(data, split)}"
        texts = load_parallel(data, split)
        sources, references = texts["src"], texts["trg"]
        files = _split_files(data, split)
    if not sources:
        raise UserError(f"{described}: no sentences to evaluate")
    return sources, references, described, files


def diagnose(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Gradient flow through time of a translator, beside fresh models of each cell type."""
    from ..reporting.translation import translation_gradient_flow
    from ..translator import Translator

    translator = Translator.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    sources, references, described, _ = _read_test_data(request, translator.config)
    flows = translation_gradient_flow(translator, sources, references)
    return finish_diagnosis(request, out, flows, "source token",
                            "the 32 longest source sentences (loss: the whole reference "
                            "translation, teacher-forced)",
                            translator.config.training.clip_grad_norm, described)


def _comparison(request: EvaluateRequest, translator: Translator, sources: list[str]
                ) -> Comparison | None:
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


def _with_split(data: DataConfig, split: str, path: str) -> DataConfig:
    import dataclasses

    changes: dict[str, Any] = {split: path}
    return dataclasses.replace(data, **changes)


def _split_files(data: DataConfig, split: str) -> list[Path]:
    """The files a split was read from (two for a plain-text pair)."""
    path = Path(getattr(data, split))
    if path.is_file():
        return [path]
    return [Path(f"{path}.{data.src}"), Path(f"{path}.{data.trg}")]
