"""Translation inference: one path used by validation, the CLI and the Python API.

    from seq2seq import Translator
    translator = Translator.from_pretrained("runs/demo")
    translator.translate(["¿Dónde está la estación?"], beam_size=5)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .config import Config, DecodingConfig, config_from_dict
from .data.batching import BucketBatchSampler, IdColumn, make_translation_batch
from .errors import UserError, require_text_list
from .export.folder import is_export_dir
from .fast_search import beam_search, greedy_search
from .models.functional import PackedCopies, packed_weights
from .models.translation import TranslationModel
from .precision import (
    PrecisionChoice,
    probe_rows,
    resolve_float32_products,
    resolve_mixed_precision,
)
from .pretrained import load_tokenizers, open_run, weights_path
from .run_directory import RunDirectory, load_weights
from .runtime import fit_threads, mixed_precision, select_device
from .search import Hypothesis, max_output_lengths, start_tokens
from .tokenizers import BOS_ID, EOS_ID, Tokenizer


@torch.no_grad()
def decode_ids(model: TranslationModel, src: IdColumn, device: torch.device,
               decoding: DecodingConfig, indices: np.ndarray | None = None
               ) -> list[list[Hypothesis]]:
    """Decode source rows (all, or ``indices``) -> per row its n-best list, in row order.

    Rows are sorted by length before batching so a batch holds similar lengths (little
    padding, few wasted steps); results are put back in input order.
    """
    model.eval()
    rows = np.arange(len(src)) if indices is None else np.asarray(indices)
    sampler = BucketBatchSampler(src.lengths()[rows] + 1, batch_size=decoding.batch_size,
                                 batch_tokens=decoding.batch_tokens, shuffle=False)
    results: dict[int, list[Hypothesis]] = {}
    with mixed_precision(device, decoding_precision(model, device, decoding).enabled):
        for positions in sampler.epoch_batches(0):
            fit_threads()
            chunk = rows[positions]
            batch = make_translation_batch(src, None, chunk)
            state = model.encode(batch.src.to(device), batch.src_lengths)
            first = start_tokens(len(chunk), device)
            limits = max_output_lengths(batch.src_lengths, decoding.max_length_ratio,
                                        decoding.max_length_extra)
            if decoding.beam_size == 1:
                found = [[h] for h in greedy_search(model, state, first, limits,
                                                    decoding.min_length,
                                                    decoding.no_repeat_ngram)]
            else:
                found = beam_search(model, state, first, limits, decoding.beam_size,
                                    decoding.length_penalty, decoding.n_best,
                                    decoding.min_length, decoding.no_repeat_ngram)
            results.update(zip(chunk.tolist(), found))
    return [results[row] for row in rows.tolist()]


def decoding_precision(model: TranslationModel, device: torch.device,
                       decoding: DecodingConfig) -> PrecisionChoice:
    """``decoding.amp`` resolved for ``model``: ``auto`` is measured once per process (and
    cached per machine) at the rows of a decoding batch, sentences times beams. An exported
    graph runs in float32, as it was exported."""
    if not isinstance(model, torch.nn.Module):
        return PrecisionChoice(False, "float32", "precision for decoding: float32 (ONNX graph)")
    rows = probe_rows(decoding.batch_size, decoding.batch_tokens, decoding.beam_size)
    return resolve_mixed_precision(decoding.amp, device, model, training=False, rows=rows)


# A search packs every product at any row count where oneDNN measured faster.
ALL_ROWS = 1 << 30


def packed_rows(model: TranslationModel, device: torch.device, decoding: DecodingConfig) -> int:
    """Up to how many rows a search packs its narrow weights (``PackedCopies.max_rows``):
    at every row count where ``decoding.onednn`` resolves to oneDNN (``auto``: measured on
    the model's products at the rows of a decoding batch, once per machine), else the
    default (0: ``PACKED_MAX_ROWS``)."""
    if not isinstance(model, torch.nn.Module):
        return 0
    rows = probe_rows(decoding.batch_size, decoding.batch_tokens, decoding.beam_size)
    choice = resolve_float32_products(decoding.onednn, device, model, training=False,
                                      rows=rows)
    return ALL_ROWS if choice.onednn else 0


@dataclass
class Translation:
    text: str
    score: float  # length-normalised log-probability (the beam's ranking score)
    log_prob: float


class Translator:
    """A trained translator loaded from a run directory."""

    def __init__(self, config: Config, model: TranslationModel, src_tokenizer: Tokenizer,
                 trg_tokenizer: Tokenizer, device: torch.device,
                 run: RunDirectory | None = None) -> None:
        self.config = config
        self.run = run  # where it was loaded from (None for a model built in memory)
        self.model = model.to(device).eval()
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer
        self.device = device
        self.truncated = 0  # sentences cut to data.max_src_length by the last call
        self.min_length_capped = 0  # ... and those whose length budget is below min_length
        self.precision: PrecisionChoice | None = None  # what the last call decoded in
        # The search's weights packed at the first call, kept for the next ones.
        self.packed = PackedCopies()

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str = "auto",
                        weights: str | Path | None = None) -> Translator:
        """Load config, tokenizers and ``model.safetensors`` (or ``weights``) from ``run_dir``;
        or, from an export folder (``seq2seq export``), its graphs to run with ONNX Runtime."""
        if is_export_dir(run_dir):
            from .export.backend import OnnxTranslationModel, open_export

            folder, config = open_export(run_dir, "translation", device, weights)
            src_tokenizer, trg_tokenizer = load_tokenizers(folder, config)
            # The graphs stand in for a TranslationModel: they offer what inference calls.
            model = cast(TranslationModel, OnnxTranslationModel(folder))
            return cls(config, model, src_tokenizer, trg_tokenizer, torch.device("cpu"))
        run, config = open_run(run_dir, "translation")
        src_tokenizer, trg_tokenizer = load_tokenizers(run, config)
        model = TranslationModel(config.model, src_tokenizer.vocab_size, trg_tokenizer.vocab_size)
        load_weights(model, weights_path(run, weights))
        return cls(config, model, src_tokenizer, trg_tokenizer, select_device(device), run)

    def translate(self, sentences: list[str], beam_size: int | None = None,
                  **decoding_options: Any) -> list[str]:
        """Translate sentences: the best translation of each (detokenized, input order).

        Options default to the run's ``decoding`` config: beam_size, length_penalty,
        max_length_ratio, max_length_extra, min_length, no_repeat_ngram, batch_size, amp
        (mixed precision: bfloat16 on CPU, float16 on CUDA; ``"auto"`` times the model's
        products in both precisions once, see ``seq2seq.precision``; ``self.precision``
        then says what ran). Empty sentences translate to "". For several hypotheses per
        sentence, with scores, use :meth:`translate_n_best`.
        """
        if "n_best" in decoding_options:
            raise TypeError("Translator.translate returns one translation per sentence; "
                            "use translate_n_best(sentences, n_best=...) for several")
        found = self.translate_n_best(sentences, beam_size=beam_size, n_best=1, **decoding_options)
        return [hypotheses[0].text for hypotheses in found]

    def translate_n_best(self, sentences: list[str], beam_size: int | None = None,
                         n_best: int | None = None, **decoding_options: Any
                         ) -> list[list[Translation]]:
        """The ``n_best`` best translations of each sentence (best first), each with its score
        (length-penalised) and log-probability; options as for :meth:`translate`. An empty
        sentence gets ``n_best`` empty translations, so every sentence has as many entries.
        """
        require_text_list(sentences, "Translator.translate")
        decoding = self.decoding_config(beam_size=beam_size, n_best=n_best, **decoding_options)
        self.precision = decoding_precision(self.model, self.device, decoding)
        decoding = dataclasses.replace(decoding, amp=self.precision.enabled)
        self.packed.max_rows = packed_rows(self.model, self.device, decoding)
        limit = self.config.data.max_src_length - 1
        encoded = self.src_tokenizer.encode_batch(list(sentences))
        self.truncated = sum(len(ids) > limit for ids in encoded)
        column = IdColumn.from_lists([ids[:limit] for ids in encoded])
        non_empty = np.array([i for i, s in enumerate(sentences) if s.strip()], dtype=np.int64)
        if decoding.min_length and len(non_empty):
            # a budget counts </s>: the words allowed are one fewer
            budgets = max_output_lengths(torch.from_numpy(column.lengths()[non_empty] + 1),
                                         decoding.max_length_ratio, decoding.max_length_extra)
            self.min_length_capped = int((budgets - 1 < decoding.min_length).sum())
        else:
            self.min_length_capped = 0
        with packed_weights(self.packed):
            found = decode_ids(self.model, column, self.device, decoding, non_empty) if len(non_empty) else []
        by_row = dict(zip(non_empty.tolist(), found))
        results = []
        for i in range(len(sentences)):
            hyps = by_row.get(i, [Hypothesis([], 0.0, 0.0)] * decoding.n_best)
            results.append([Translation(self.trg_tokenizer.decode(h.tokens), h.score, h.log_prob)
                            for h in hyps])
        return results

    @torch.no_grad()
    def attention(self, source: str, translation: str
                  ) -> tuple[list[str], list[str], np.ndarray] | None:
        """Where the model looks while it writes ``translation`` of ``source`` (teacher-forced).

        Returns (source pieces + </s>, target pieces + </s>, weights [T, S]), or None for a
        model without attention.
        """
        if not isinstance(self.model, TranslationModel):
            raise UserError("Translator.attention needs the run directory (the PyTorch "
                            "model); an export's decoder_step graph returns the weights per step")
        if self.model.decoder.attention is None:
            return None
        limit = self.config.data.max_src_length - 1
        src_ids = self.src_tokenizer.encode(source)[:limit]
        trg_ids = self.trg_tokenizer.encode(translation)
        src = torch.tensor([src_ids + [EOS_ID]], device=self.device)
        trg_input = torch.tensor([[BOS_ID] + trg_ids], device=self.device)
        _, weights = self.model(src, torch.tensor([len(src_ids) + 1]), trg_input,
                                return_attention=True)
        pieces = ([self.src_tokenizer.id_to_token(i) for i in src_ids] + ["</s>"],
                  [self.trg_tokenizer.id_to_token(i) for i in trg_ids] + ["</s>"])
        return pieces[0], pieces[1], weights[0].float().cpu().numpy()

    def decoding_config(self, **options: Any) -> DecodingConfig:
        """The run's decoding settings with the given non-None options replaced (validated)."""
        chosen = {k: v for k, v in options.items() if v is not None}
        valid = {f.name for f in dataclasses.fields(DecodingConfig)}
        unknown = sorted(set(chosen) - valid)
        if unknown:
            raise UserError(f"unknown decoding option(s) {', '.join(unknown)} "
                            f"(valid: {', '.join(sorted(valid))})")
        if "beam_size" in chosen and "n_best" not in chosen:
            chosen["n_best"] = min(self.config.decoding.n_best, chosen["beam_size"])
        merged = dataclasses.replace(self.config.decoding, **chosen)
        raw = self.config.to_dict()
        raw["decoding"] = dataclasses.asdict(merged)
        given = ", ".join(f"{k}={v!r}" for k, v in options.items() if v is not None)
        # The same checks as a config file: "decoding options (beam_size=0): decoding.beam_size
        # must be >= 1" (--beam-size on the command line).
        config_from_dict(raw, source=f"decoding options ({given})")
        return merged
