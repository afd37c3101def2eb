"""The translation report: scores, BLEU by source length, best and worst sentences, attention
heatmaps, and an optional side-by-side comparison with a paired bootstrap test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..metrics.translation import paired_bootstrap, score_translations, sentence_chrf
from . import plots
from .document import Document

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..models.translation import TranslationModel
    from ..tokenizers import Tokenizer
    from ..translator import Translator
    from .gradient_flow import GradientFlow, Probe

# Source-length buckets (in words), chosen so that short everyday sentences and long
# descriptive ones land in different buckets.
LENGTH_EDGES = (5, 10, 15, 20, 30)
SAMPLE_ROWS = 5
HEATMAPS = 3
HEATMAP_MAX_TOKENS = 30


@dataclass
class Comparison:
    """Another system's hypotheses on the same sentences (another run or other decoding)."""

    name: str
    hypotheses: list[str]


def length_buckets(sources: list[str]) -> tuple[list[str], np.ndarray]:
    """(bucket labels, bucket index of each source sentence) by source length in words."""
    labels, low = [], 1
    for high in LENGTH_EDGES:
        labels.append(f"{low}-{high}")
        low = high + 1
    labels.append(f"{low}+")
    lengths = np.array([len(s.split()) for s in sources])
    return labels, np.searchsorted(np.array(LENGTH_EDGES), lengths, side="left")


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[str],
                   tokenize: str, lowercase: bool) -> list[dict[str, Any]]:
    """Corpus BLEU of each source-length bucket (empty buckets left out)."""
    labels, which = length_buckets(sources)
    rows = []
    for index, label in enumerate(labels):
        chosen = np.flatnonzero(which == index)
        if len(chosen) == 0:
            continue
        score = score_translations([hypotheses[i] for i in chosen], [references[i] for i in chosen],
                                   ("bleu",), tokenize, lowercase)["bleu"]
        rows.append({"words": label, "sentences": int(len(chosen)), "bleu": round(score.value, 2)})
    return rows


def translation_sections(doc: Document, metrics: dict[str, Any], translator: Translator,
                         sources: list[str],
                         references: list[str], hypotheses: list[str],
                         comparison: Comparison | None = None) -> dict[str, Any]:
    """Add the translation sections to ``doc``; return the extra metrics they computed."""
    evaluation = translator.config.evaluation
    extra: dict[str, Any] = {}

    doc.heading("Scores")
    names = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}
    doc.table(["metric", "score", "sacrebleu signature"],
              [[names[k], metrics[k], metrics["signatures"][k]] for k in names if k in metrics])

    doc.heading("BLEU by source length")
    by_length = bleu_by_length(sources, hypotheses, references, evaluation.tokenize,
                               evaluation.lowercase)
    extra["bleu_by_source_length"] = by_length
    doc.figure("bleu_by_length", plots.bars(
        [r["words"] for r in by_length], [r["bleu"] for r in by_length],
        "BLEU by source length", "source length (words)", "corpus BLEU of the bucket",
        counts=[r["sentences"] for r in by_length]),
        "Corpus BLEU of the sentences in each source-length bucket (n = sentences).")
    doc.table(["source words", "sentences", "BLEU"],
              [[r["words"], r["sentences"], r["bleu"]] for r in by_length])

    chrf = sentence_chrf(hypotheses, references)
    _samples(doc, sources, references, hypotheses, chrf)
    _attention(doc, translator, sources, hypotheses)
    if comparison is not None:
        extra["comparison"] = _comparison(doc, metrics, comparison, hypotheses, references,
                                          evaluation.tokenize, evaluation.lowercase)
    return extra


def _samples(doc: Document, sources: list[str], references: list[str], hypotheses: list[str],
             chrf: list[float]) -> None:
    doc.heading("Sample translations")
    doc.text("Sentence-level chrF against the reference; the best and the worst "
             f"{SAMPLE_ROWS} non-empty sentences of the set, then the first {SAMPLE_ROWS}.")
    scored = [i for i, s in enumerate(sources) if s.strip()]
    ranked = sorted(scored, key=lambda i: chrf[i])
    groups = (("best", ranked[::-1][:SAMPLE_ROWS]), ("worst", ranked[:SAMPLE_ROWS]),
              ("first", scored[:SAMPLE_ROWS]))
    rows = [[group, i + 1, sources[i], references[i], hypotheses[i], round(chrf[i], 1)]
            for group, chosen in groups for i in chosen]
    doc.table(["", "line", "source", "reference", "hypothesis", "chrF"], rows)


def _attention(doc: Document, translator: Translator, sources: list[str],
               hypotheses: list[str]) -> None:
    doc.heading("Attention")
    if translator.model.decoder.attention is None:
        doc.text("This model has no attention (model.decoder.attention: none), so there are "
                 "no attention maps to show.", note=True)
        return
    shown = 0
    for i, (source, hypothesis) in enumerate(zip(sources, hypotheses)):
        if shown == HEATMAPS:
            break
        if not source.strip():
            continue
        found = translator.attention(source, hypothesis)
        assert found is not None  # the model has attention (checked above)
        src_pieces, trg_pieces, weights = found
        if max(len(src_pieces), len(trg_pieces)) > HEATMAP_MAX_TOKENS:
            continue
        doc.figure(f"attention_{i + 1}", plots.heatmap(
            weights, src_pieces, trg_pieces, f"Attention, sentence {i + 1}",
            "source token", "output token", "attention weight", value_range=(0.0, 1.0)),
            f"Attention weights of line {i + 1}: each row is one output token, each column a "
            "source token; rows sum to 1.")
        shown += 1
    if shown == 0:
        doc.text(f"No sentence short enough (at most {HEATMAP_MAX_TOKENS} tokens) to draw.",
                 note=True)


def _comparison(doc: Document, metrics: dict[str, Any], comparison: Comparison,
                hypotheses: list[str], references: list[str], tokenize: str,
                lowercase: bool) -> dict[str, Any]:
    doc.heading(f"Comparison with {comparison.name}")
    test = paired_bootstrap(comparison.hypotheses, hypotheses, references, tokenize, lowercase)
    rows = [[{"bleu": "BLEU", "chrf": "chrF"}[name], r["baseline"], r["system"],
             f"{r['system'] - r['baseline']:+.2f}",
             f"{r['system_mean']:.2f} ± {r['system_ci95']:.2f}", f"{r['p_value']:.3f}"]
            for name, r in test.items()]
    doc.table(["metric", comparison.name, "this", "difference", "this: bootstrap mean ± 95% CI",
               "p-value"], rows)
    doc.text("Paired bootstrap resampling (sacrebleu, 1,000 resamples, fixed seed): the p-value "
             "is the chance of seeing a difference this large if the two systems were equally "
             "good; below 0.05 the difference is usually called significant.")
    changed = [i for i, (a, b) in enumerate(zip(comparison.hypotheses, hypotheses)) if a != b]
    doc.text(f"{len(changed):,} of {len(hypotheses):,} translations differ.")
    return {"baseline": comparison.name, "paired_bootstrap": test, "sentences_changed": len(changed)}


def write_translation_report(directory: Path, translator: Translator, described: str, files: list[Any],
                             sources: list[str], references: list[str], hypotheses: list[str],
                             metrics: dict[str, Any], seconds: float,
                             comparison: Comparison | None = None) -> dict[str, Any]:
    """Write report.md / report.html / metrics.json for one evaluated test set; return the
    metrics written (the printed ones plus what the report adds)."""
    from .common import (
        data_section,
        describe_files,
        describe_hardware,
        describe_model,
        environment_section,
        model_section,
        settings_section,
        training_seconds,
        training_section,
    )
    from .gradient_flow import flow_section

    run = translator.run
    assert run is not None  # a report is of a run directory
    config = translator.config
    tokenizers = ({"joint": translator.src_tokenizer} if translator.src_tokenizer is translator.trg_tokenizer
                  else {"source": translator.src_tokenizer, "target": translator.trg_tokenizer})
    model_info = describe_model(config, translator.model, tokenizers)
    file_info = describe_files(files)
    hardware = describe_hardware(translator.device)
    doc = Document(f"Translation report: {run.path}")
    doc.text(f"{metrics['sentences']:,} sentences of {described}, translated with beam "
             f"{metrics['decoding']['beam_size']}: BLEU {metrics.get('bleu', float('nan')):.2f}, "
             f"chrF {metrics.get('chrf', float('nan')):.2f}, TER {metrics.get('ter', float('nan')):.2f}.")
    extra = translation_sections(doc, metrics, translator, sources, references, hypotheses,
                                 comparison)
    model_section(doc, model_info)
    data_section(doc, described, f"{metrics['sentences']:,} sentences", file_info)
    settings_section(doc, "Decoding", metrics["decoding"])
    environment_section(doc, hardware, seconds, training_seconds(run))
    training_section(doc, run, config.training.early_stopping_metric)
    flows = translation_gradient_flow(translator, sources, references)
    flow_section(doc, flows, "source token", "the 32 longest source sentences (loss: the "
                 "whole reference translation, teacher-forced)", config.training.clip_grad_norm)
    written = {**metrics, **extra, "model": model_info, "data_files": file_info,
               "hardware": hardware, "gradient_flow": [f.as_dict() for f in flows]}
    doc.write(directory, written)
    return written


def translation_probe(config: Config, model: TranslationModel, src_tokenizer: Tokenizer,
                      trg_tokenizer: Tokenizer, sources: list[str], references: list[str],
                      device: torch.device, count: int = 32) -> Probe:
    """A gradient-flow probe on the ``count`` longest source sentences: the loss is the
    teacher-forced target loss, x_t the embedded source tokens."""
    from ..data.batching import IdColumn, make_translation_batch
    from ..models.functional import sequence_loss
    from .gradient_flow import Probe

    src_ids = [ids[: config.data.max_src_length - 1] for ids in src_tokenizer.encode_batch(sources)]
    trg_ids = [ids[: config.data.max_trg_length - 1] for ids in trg_tokenizer.encode_batch(references)]
    longest = np.argsort([-len(ids) for ids in src_ids], kind="stable")[:count]
    batch = make_translation_batch(IdColumn.from_lists([src_ids[i] for i in longest]),
                                   IdColumn.from_lists([trg_ids[i] for i in longest]),
                                   np.arange(len(longest))).to(device)
    size = len(longest)

    target = batch.trg_output
    assert target is not None  # made from references

    def loss(net: torch.nn.Module) -> torch.Tensor:
        features, _ = net(batch.src, batch.src_lengths, batch.trg_input)
        return sequence_loss(cast("TranslationModel", net), features, target)[0] / size

    mask = (torch.arange(batch.src.size(1))[None, :] < batch.src_lengths[:, None]).to(device)
    return Probe(model, model.src_embed, loss, mask)


def translation_gradient_flow(translator: Translator, sources: list[str], references: list[str]
                              ) -> list[GradientFlow]:
    """Gradient flow of the translator and of fresh models of each cell type."""
    from ..models.translation import TranslationModel
    from .gradient_flow import compare_cells

    config, device = translator.config, translator.device
    src_tok, trg_tok = translator.src_tokenizer, translator.trg_tokenizer

    def probe_for(model_config: Config) -> Probe:
        model = TranslationModel(model_config.model, src_tok.vocab_size, trg_tok.vocab_size)
        return translation_probe(model_config, model.to(device), src_tok, trg_tok, sources,
                                 references, device)

    trained = translation_probe(config, translator.model, src_tok, trg_tok, sources, references,
                                device)
    return compare_cells(config, trained, probe_for)
