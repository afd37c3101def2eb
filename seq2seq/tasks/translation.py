"""The translation head's side of training: data, tokenizers, model, loss, validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from rich.console import Console

from ..config import Config
from ..data.batching import BucketBatchSampler, TranslationBatch, make_translation_batch
from ..data.translation import (
    ParallelCorpus,
    load_parallel,
    load_training_pairs,
    tokenize_parallel,
    train_tokenizers,
)
from ..metrics.translation import score_translations
from ..models.functional import sequence_loss
from ..models.translation import TranslationModel
from ..pretrained import load_tokenizers, save_tokenizers
from ..run_directory import RunDirectory
from ..tokenizers import Tokenizer
from ..training.distributed import ProcessInfo
from ..training.trainer import Validation
from ..translator import decode_ids, decoding_precision


class TranslationTask:
    """Implements the trainer's TrainingTask protocol for a TranslationModel."""

    unit = "tokens"  # target tokens

    def __init__(self, config: Config, train: ParallelCorpus, dev: ParallelCorpus,
                 src_tokenizer: Tokenizer, trg_tokenizer: Tokenizer, device: torch.device,
                 process: ProcessInfo = ProcessInfo()) -> None:
        self.config = config
        self.train = train
        self.dev = dev
        self.src_tokenizer = src_tokenizer
        self.trg_tokenizer = trg_tokenizer
        self.device = device
        self.model = TranslationModel(config.model, src_tokenizer.vocab_size,
                                      trg_tokenizer.vocab_size).to(device)
        t = config.training
        self.sampler = BucketBatchSampler(
            train.src.lengths() + 1, batch_size=t.batch_size, batch_tokens=t.batch_tokens,
            shuffle=True, seed=t.seed, rank=process.rank, world_size=process.world_size,
            secondary_lengths=train.trg.lengths() + 1)
        limit = config.data.dev_max_sentences
        self.dev_rows = np.arange(min(len(dev), limit) if limit else len(dev))
        self.precision_shown = False  # the first validation says what ``auto`` decoded in

    @classmethod
    def setup(cls, config: Config, run: RunDirectory, resume: bool, device: torch.device,
              console: Console, process: ProcessInfo = ProcessInfo()) -> TranslationTask:
        """Load and tokenize the data; train the tokenizers (fresh run) or load them (resume)."""
        data = config.data
        train_texts, skipped = load_training_pairs(data)
        dev_texts = load_parallel(data, "dev")
        if resume or not process.is_main:  # (rank 0 trained and saved them before the others start)
            src_tok, trg_tok = load_tokenizers(run, config)
        else:
            src_tok, trg_tok = train_tokenizers(train_texts, config.tokenizer, config.training.seed)
            save_tokenizers(run, config, src_tok, trg_tok)
        train = tokenize_parallel(train_texts, src_tok, trg_tok, data.max_src_length,
                                  data.max_trg_length)
        dev = tokenize_parallel(dev_texts, src_tok, trg_tok, data.max_src_length,
                                data.max_trg_length)
        vocab = (f"joint vocabulary {src_tok.vocab_size}" if src_tok is trg_tok else
                 f"vocabularies {src_tok.vocab_size} / {trg_tok.vocab_size}")
        dropped = f", {skipped:,} with an empty side skipped" if skipped else ""
        console.print(f"data: {len(train):,} training pairs ({train.truncated:,} truncated to "
                      f"{data.max_src_length}/{data.max_trg_length} tokens{dropped}), "
                      f"{len(dev):,} dev "
                      f"pairs; {config.tokenizer.kind} {vocab}")
        return cls(config, train, dev, src_tok, trg_tok, device, process)

    # ---- the TrainingTask protocol ----

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        return self.sampler.epoch_batches(epoch)

    def make_batch(self, indices: np.ndarray, device: torch.device) -> TranslationBatch:
        return make_translation_batch(self.train.src, self.train.trg, indices).to(device)

    def loss(self, batch: TranslationBatch, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        features, _ = self.model(batch.src, batch.src_lengths, batch.trg_input,
                                 self.teacher_forcing_ratio(step))
        assert batch.trg_output is not None  # training batches hold targets
        return sequence_loss(self.model, features, batch.trg_output,
                             self.config.training.label_smoothing)

    def teacher_forcing_ratio(self, step: int) -> float:
        """Scheduled sampling: decays linearly from teacher_forcing to teacher_forcing_min."""
        t = self.config.training
        if t.teacher_forcing_decay_steps <= 0:
            return t.teacher_forcing
        progress = min(1.0, step / t.teacher_forcing_decay_steps)
        return t.teacher_forcing + (t.teacher_forcing_min - t.teacher_forcing) * progress

    @torch.no_grad()
    def validate(self) -> Validation:
        """Teacher-forced loss/perplexity and greedy BLEU/chrF on the dev set."""
        self.model.eval()
        total_nll, total_tokens = 0.0, 0
        sampler = BucketBatchSampler(self.dev.src.lengths()[self.dev_rows] + 1, batch_size=64,
                                     shuffle=False)
        for batch_rows in sampler.epoch_batches(0):
            batch = make_translation_batch(self.dev.src, self.dev.trg,
                                           self.dev_rows[batch_rows]).to(self.device)
            features, _ = self.model(batch.src, batch.src_lengths, batch.trg_input)
            assert batch.trg_output is not None  # dev batches hold targets
            _, nll, tokens = sequence_loss(self.model, features, batch.trg_output)
            total_nll += float(nll)
            total_tokens += tokens
        loss = total_nll / max(total_tokens, 1)
        metrics = {"loss": loss, "ppl": math.exp(min(loss, 50))}

        greedy = dataclasses.replace(self.config.decoding, beam_size=1, n_best=1)
        precision = decoding_precision(self.model, self.device, greedy)
        found = decode_ids(self.model, self.dev.src, self.device,
                           dataclasses.replace(greedy, amp=precision.enabled), self.dev_rows)
        hypotheses = [self.trg_tokenizer.decode(h[0].tokens) for h in found]
        sources = self.dev.texts.select(self.dev_rows)["src"]
        references = self.dev.texts.select(self.dev_rows)["trg"]
        evaluation = self.config.evaluation
        wanted = tuple(m for m in ("bleu", "chrf") if m in evaluation.metrics) or ("bleu",)
        for name, score in score_translations(hypotheses, references, wanted,
                                              evaluation.tokenize, evaluation.lowercase).items():
            metrics[name] = score.value
        examples = []
        if precision.auto and not self.precision_shown:
            examples.append(precision.line)
            self.precision_shown = True
        for i in range(min(3, len(hypotheses))):
            examples += [f"source:     {sources[i]}", f"reference:  {references[i]}",
                         f"hypothesis: {hypotheses[i]}"]
        return Validation(metrics, examples)
