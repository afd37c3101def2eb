"""The language-model report: perplexity and bits per character, samples at a few
temperatures, loss by position (does the model use long context?), gradient flow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..data.language_model import make_lines_batch, tokenize_lines, tokenize_stream
from . import plots
from .document import Document

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import Config
    from ..data.language_model import LineCorpus, LMTexts, TokenStream
    from ..generator import Generator
    from ..models.language_model import LanguageModel
    from .gradient_flow import GradientFlow, Probe

TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_SEED = 1
SAMPLE_TOKENS = {"char": 300}  # else 60
POSITION_SEGMENTS = 64  # stream: segments scored from a fresh state
POSITION_LENGTH = 256  # stream: tokens per segment
MIN_LINES_AT_POSITION = 20  # lines: positions fewer lines reach are left out
PROBE_SEQUENCES = 32
PROBE_LENGTH = 100  # stream: tokens before the predicted one


def tokenized(generator: Generator, texts: LMTexts) -> TokenStream | LineCorpus:
    """The evaluated text as the model reads it: a TokenStream or a LineCorpus."""
    if generator.config.data.lm_mode == "stream":
        return tokenize_stream(texts, generator.tokenizer)
    return tokenize_lines(texts, generator.tokenizer, None, generator.conditions,
                          generator.config.data.bad_rows)


def segments(ids: np.ndarray, count: int, length: int) -> np.ndarray:
    """``count`` evenly spaced windows of ``length`` + 1 tokens (inputs and their targets)."""
    length = min(length, len(ids) - 1)
    starts = np.linspace(0, len(ids) - length - 1, num=min(count, len(ids) - length), dtype=int)
    return np.stack([ids[s: s + length + 1] for s in starts])


@torch.no_grad()
def loss_by_position(generator: Generator, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(positions, mean NLL in nats) of the token at each position counted from a fresh state:
    the start of a stream segment, or of a line."""
    model, device = generator.model, generator.device
    model.eval()
    if generator.config.data.lm_mode == "stream":
        windows = torch.from_numpy(segments(data.ids, POSITION_SEGMENTS, POSITION_LENGTH)).long()
        features, _ = model(windows[:, :-1].to(device))
        nll = _token_nll(model, features, windows[:, 1:].to(device))
        return np.arange(1, nll.size(1) + 1), nll.mean(0).cpu().numpy()
    totals, counts = np.zeros(0), np.zeros(0)
    for start in range(0, len(data.rows), 256):
        batch = make_lines_batch(data, data.rows[start: start + 256]).to(device)
        features, _ = model(batch.inputs, None, batch.conditions)
        nll = _token_nll(model, features, batch.targets)
        real = (batch.targets != 0).float()
        width = nll.size(1)
        if width > len(totals):
            totals = np.pad(totals, (0, width - len(totals)))
            counts = np.pad(counts, (0, width - len(counts)))
        totals[:width] += (nll * real).sum(0).cpu().numpy()
        counts[:width] += real.sum(0).cpu().numpy()
    keep = counts >= min(MIN_LINES_AT_POSITION, max(counts.max(initial=0), 1))
    return np.flatnonzero(keep) + 1, totals[keep] / counts[keep]


def _token_nll(model: LanguageModel, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, T] negative log-likelihood of each target (0 at padding)."""
    log_probs = torch.log_softmax(model.logits(features).float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked.masked_fill(targets == 0, 0.0)


def samples_section(doc: Document, generator: Generator) -> list[dict[str, Any]]:
    doc.heading("Samples")
    kind = generator.tokenizer.kind
    tokens = SAMPLE_TOKENS.get(kind, 60)
    conditions = ([None] if generator.conditions is None
                  else list(generator.conditions.labels[:3]) if generator.conditions.kind == "label"
                  else [])
    if not conditions:
        doc.text("A model conditioned on feature vectors has no vector to sample from here.",
                 note=True)
        return []
    doc.text(f"{tokens} tokens from an empty prompt, seed {SAMPLE_SEED}, at temperatures "
             f"{', '.join(map(str, TEMPERATURES))} (lower: more probable, more repetitive).")
    found = []
    for condition in conditions:
        for temperature in TEMPERATURES:
            text = generator.generate("", max_tokens=tokens, temperature=temperature, top_k=0,
                                      top_p=1.0, greedy=False, beam_size=1, num_samples=1,
                                      seed=SAMPLE_SEED, condition=condition)[0].text
            title = f"temperature {temperature}" + (f", condition {condition}" if condition else "")
            doc.heading(title, level=3)
            doc.code(text)
            found.append({"temperature": temperature, "condition": condition, "text": text})
    return found


def lm_probe(generator: Generator, model: LanguageModel, data: Any, device: torch.device
             ) -> Probe:
    """A gradient-flow probe: the loss is the NLL of the last token of long sequences (a stream
    segment of PROBE_LENGTH tokens, or the longest lines), x_t the embedded inputs."""
    from .gradient_flow import Probe

    if generator.config.data.lm_mode == "stream":
        windows = torch.from_numpy(segments(data.ids, PROBE_SEQUENCES, PROBE_LENGTH)).long().to(device)
        inputs, last = windows[:, :-1], windows[:, -1]
        conditions = None
        lengths = torch.full((len(windows),), inputs.size(1), device=device)
    else:
        rows = data.rows[np.argsort(-data.ids.lengths()[data.rows], kind="stable")[:PROBE_SEQUENCES]]
        batch = make_lines_batch(data, rows).to(device)
        lengths = (batch.targets != 0).sum(1)
        inputs, conditions = batch.inputs, batch.conditions
        last = batch.targets.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)

    def loss(net: torch.nn.Module) -> torch.Tensor:
        features, _ = net(inputs, None, conditions)
        final = features[torch.arange(len(last), device=device), lengths - 1]
        logits = cast("LanguageModel", net).logits(final)
        return torch.nn.functional.cross_entropy(logits.float(), last)

    mask = torch.arange(inputs.size(1), device=device)[None, :] < lengths[:, None]
    return Probe(model, model.embedding, loss, mask)


def lm_gradient_flow(generator: Generator, data: TokenStream | LineCorpus
                     ) -> list[GradientFlow]:
    from ..models.language_model import LanguageModel
    from .gradient_flow import compare_cells

    config, device = generator.config, generator.device
    inputs = generator.conditions.inputs if generator.conditions else 0

    def probe_for(model_config: Config) -> Probe:
        model = LanguageModel(model_config.model, generator.tokenizer.vocab_size, inputs)
        return lm_probe(generator, model.to(device), data, device)

    return compare_cells(config, lm_probe(generator, generator.model, data, device), probe_for)


FLOW_POSITION = "token"
FLOW_WHERE = (f"{PROBE_SEQUENCES} sequences of the data ({PROBE_LENGTH}-token stream segments, or "
              "the longest lines); loss: the prediction of each sequence's last token only")


def write_generation_report(directory: Path, generator: Generator, described: str,
                            files: list[Any], texts: LMTexts,
                            metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Write report.md / report.html / metrics.json for one evaluated text."""
    from .common import (
        data_section,
        describe_files,
        describe_hardware,
        describe_model,
        environment_section,
        model_section,
        training_seconds,
        training_section,
    )
    from .gradient_flow import flow_section

    run, config = generator.run, generator.config
    assert run is not None  # a report is of a run directory
    model_info = describe_model(config, generator.model, {"text": generator.tokenizer})
    file_info = describe_files(files)
    hardware = describe_hardware(generator.device)
    data = tokenized(generator, texts)
    doc = Document(f"Language-model report: {run.path}")
    doc.text(f"{described}: perplexity {metrics['ppl']:.2f}, {metrics['loss']:.4f} nats per "
             f"token, {metrics['bpc']:.4f} bits per character ({metrics['tokens']:,} tokens).")
    doc.heading("Scores")
    doc.table(["metric", "value"], [["perplexity", metrics["ppl"]],
                                    ["loss (nats per token)", f"{metrics['loss']:.4f}"],
                                    ["bits per token", f"{metrics['loss'] / np.log(2):.4f}"],
                                    ["bits per character", f"{metrics['bpc']:.4f}"]])
    samples = samples_section(doc, generator)

    doc.heading("Loss by position")
    positions, nll = loss_by_position(generator, data)
    where = ("from a fresh state at the start of 64 evenly spaced stream segments"
             if config.data.lm_mode == "stream" else "from the start of each line")
    series = {"loss at this position": (positions, nll)}
    if config.data.lm_mode == "stream":
        series["whole text, state carried"] = (positions, np.full(len(positions), metrics["loss"]))
    doc.figure("loss_by_position", plots.lines(
        series, "Loss by position", f"tokens of context ({where.split(' at ')[0]})",
        "cross-entropy (nats per token)"),
        f"Mean loss of the token at each position, counted {where}. A curve that keeps falling "
        "means the model uses that much context.")
    model_section(doc, model_info)
    data_section(doc, described,
                 f"{metrics['tokens']:,} tokens ({metrics['characters']:,} characters)", file_info)
    environment_section(doc, hardware, seconds, training_seconds(run))
    training_section(doc, run, config.training.early_stopping_metric)
    flows = lm_gradient_flow(generator, data)
    flow_section(doc, flows, FLOW_POSITION, FLOW_WHERE, config.training.clip_grad_norm)
    written = {**metrics, "samples": samples,
               "loss_by_position": [round(float(v), 5) for v in nll],
               "model": model_info, "data_files": file_info, "hardware": hardware,
               "gradient_flow": [f.as_dict() for f in flows]}
    doc.write(directory, written)
    return written
