"""The language-model head's side of training: data, tokenizer, model, loss, validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from rich.console import Console

from ..config import Config
from ..data.batching import BucketBatchSampler
from ..data.language_model import (
    Conditions,
    LineCorpus,
    LinesBatch,
    StreamBatch,
    StreamWindows,
    TokenStream,
    Window,
    load_train_dev,
    make_lines_batch,
    tokenize_lines,
    tokenize_stream,
    tokenizer_texts,
)
from ..generator import STREAM_WINDOW, Generator, Perplexity, score_lines, score_stream
from ..models.functional import sequence_loss
from ..models.language_model import LanguageModel, LMState
from ..pretrained import load_tokenizers, save_tokenizers
from ..run_directory import RunDirectory
from ..tokenizers import Tokenizer, train_tokenizer
from ..training.distributed import ProcessInfo
from ..training.trainer import Validation
from ..word_vectors import start_from_vectors, vocabulary_words

SAMPLE_TOKENS = {"char": 240}  # tokens of the sample shown at each validation (else 40)
SAMPLE_CONDITIONS = 3  # conditioned models: one sample for each of the first few labels


class DataMode(Protocol):
    """What LanguageModelTask asks of its mode. The batch plan, batch and data types are the
    mode's own (StreamMode: windows of a TokenStream; LinesMode: row indices of a LineCorpus);
    the task only hands back what the same mode gave it, hence ``Any`` here."""

    def batches(self, epoch: int) -> list[Any]: ...
    def make_batch(self, plan: Any, device: torch.device) -> Any: ...
    def features(self, model: LanguageModel, batch: Any) -> torch.Tensor: ...
    def score(self, model: LanguageModel, dev: Any) -> Perplexity: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StreamMode:
    """``lm_mode: stream``: one running text cut into truncated-BPTT windows. The hidden state
    after each window is kept (detached) and fed to the next window of the epoch; it is part
    of ``state_dict()`` so a resumed run continues exactly."""

    def __init__(self, config: Config, train: TokenStream, device: torch.device,
                 process: ProcessInfo) -> None:
        t = config.training
        self.windows = StreamWindows(train.ids, t.batch_size, config.data.bptt, seed=t.seed,
                                     rank=process.rank, world_size=process.world_size,
                                     where=config.data.train)
        self.window = max(STREAM_WINDOW, config.data.bptt)  # for scoring the dev text
        self.device = device
        self.carried: LMState | None = None  # the state after the last window

    def batches(self, epoch: int) -> list[Window]:
        return self.windows.epoch_windows(epoch)

    def make_batch(self, window: Window, device: torch.device) -> StreamBatch:
        return self.windows.batch(window).to(device)

    def features(self, model: LanguageModel, batch: StreamBatch) -> torch.Tensor:
        # Each epoch starts from a zero state; later windows continue from the previous one.
        state = None if batch.window == 0 else self.carried
        features, final = model(batch.inputs, state)
        self.carried = final.detach()
        return features

    def score(self, model: LanguageModel, dev: TokenStream) -> Perplexity:
        return score_stream(model, dev, self.device, window=self.window)

    def state_dict(self) -> dict[str, Any]:
        if self.carried is None:
            return {}
        state = {"hidden": self.carried.hidden.cpu()}
        if self.carried.cell is not None:
            state["cell"] = self.carried.cell.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            self.carried = None
            return
        cell = state.get("cell")
        self.carried = LMState(state["hidden"].to(self.device),
                               None if cell is None else cell.to(self.device))


class LinesMode:
    """``lm_mode: lines``: separate lines (each with its condition, if any), length-bucketed;
    every line starts from the initial state, so nothing carries between batches."""

    def __init__(self, config: Config, train: LineCorpus, device: torch.device,
                 process: ProcessInfo) -> None:
        t = config.training
        self.train = train
        self.sampler = BucketBatchSampler(
            train.ids.lengths()[train.rows], batch_size=t.batch_size,
            batch_tokens=t.batch_tokens, shuffle=True, seed=t.seed, rank=process.rank,
            world_size=process.world_size)
        self.device = device

    def batches(self, epoch: int) -> list[np.ndarray]:
        return self.sampler.epoch_batches(epoch)

    def make_batch(self, indices: np.ndarray, device: torch.device) -> LinesBatch:
        return make_lines_batch(self.train, self.train.rows[indices]).to(device)

    def features(self, model: LanguageModel, batch: LinesBatch) -> torch.Tensor:
        features, _ = model(batch.inputs, None, batch.conditions)
        return features

    def score(self, model: LanguageModel, dev: LineCorpus) -> Perplexity:
        return score_lines(model, dev, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class LanguageModelTask:
    """Implements the trainer's TrainingTask protocol for a LanguageModel; how the text is cut
    into batches is its ``mode`` (StreamMode or LinesMode)."""

    unit = "tokens"  # predicted tokens, line ends included

    def __init__(self, config: Config, train: TokenStream | LineCorpus,
                 dev: TokenStream | LineCorpus, tokenizer: Tokenizer,
                 conditions: Conditions | None, device: torch.device,
                 process: ProcessInfo = ProcessInfo()) -> None:
        self.config = config
        self.train = train
        self.dev = dev
        self.tokenizer = tokenizer
        self.conditions = conditions
        self.device = device
        self.model = LanguageModel(config.model, tokenizer.vocab_size,
                                   conditions.inputs if conditions else 0).to(device)
        mode: Callable[[Config, Any, torch.device, ProcessInfo], DataMode] = (
            StreamMode if config.data.lm_mode == "stream" else LinesMode)
        self.mode = mode(config, train, device, process)

    @classmethod
    def setup(cls, config: Config, run: RunDirectory, resume: bool, device: torch.device,
              console: Console, process: ProcessInfo = ProcessInfo()) -> LanguageModelTask:
        """Load and tokenize the data; train the tokenizer (fresh run) or load it (resume);
        start a fresh model's embedding from ``model.pretrained_embeddings`` if given."""
        data = config.data
        train: TokenStream | LineCorpus
        dev: TokenStream | LineCorpus
        train_texts, dev_texts = load_train_dev(data)
        kind = config.model.language_model.condition_type
        if resume or not process.is_main:  # (rank 0 trained and saved it before the others start)
            tokenizer, _ = load_tokenizers(run, config)
            conditions = Conditions.load(run.path) if data.condition else None
        else:
            tok = config.tokenizer
            tokenizer = train_tokenizer(
                tokenizer_texts(train_texts, tok.kind, data.lm_mode), tok.kind,
                vocab_size=tok.vocab_size, model_type=tok.model_type, min_freq=tok.min_freq,
                max_sentences=tok.max_sentences, lowercase=tok.lowercase,
                seed=config.training.seed,
                extra_words=vocabulary_words(tok, config.model.pretrained_embeddings))
            conditions = Conditions.from_training(kind, train_texts) if data.condition else None
            save_tokenizers(run, config, tokenizer, tokenizer)
            if conditions is not None:
                conditions.save(run.path)
        if data.lm_mode == "stream":
            train, dev = tokenize_stream(train_texts, tokenizer), tokenize_stream(dev_texts, tokenizer)
            console.print(f"data: a stream of {train.tokens:,} training and {dev.tokens:,} dev "
                          f"tokens ({dev_texts.where}); {config.tokenizer.kind} vocabulary "
                          f"{tokenizer.vocab_size}")
        else:
            train_lines = tokenize_lines(train_texts, tokenizer, data.max_length, conditions,
                                         data.bad_rows)
            dev_lines = tokenize_lines(dev_texts, tokenizer, None, conditions, data.bad_rows)
            conditioned = (f"; conditioned on {len(conditions.labels)} labels" if conditions
                           and conditions.kind == "label" else
                           f"; conditioned on {conditions.size} features" if conditions else "")
            console.print(f"data: {len(train_lines):,} training lines ({train_lines.truncated:,} "
                          f"cut to {data.max_length} tokens, {train_lines.skipped:,} blank or "
                          f"skipped), {len(dev_lines):,} dev lines ({dev_texts.where}); "
                          f"{config.tokenizer.kind} "
                          f"vocabulary {tokenizer.vocab_size}{conditioned}")
            train, dev = train_lines, dev_lines
        task = cls(config, train, dev, tokenizer, conditions, device, process)
        if config.model.pretrained_embeddings and not resume and process.is_main:
            console.print(start_from_vectors(task.model.embedding, tokenizer,
                                             config.model.pretrained_embeddings), markup=False)
        return task

    # ---- the TrainingTask protocol ----

    def train_batches(self, epoch: int) -> list[Window] | list[np.ndarray]:
        return self.mode.batches(epoch)

    def make_batch(self, indices: Window | np.ndarray,
                   device: torch.device) -> StreamBatch | LinesBatch:
        return self.mode.make_batch(indices, device)

    def loss(self, batch: StreamBatch | LinesBatch, step: int
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
        features = self.mode.features(self.model, batch)
        return sequence_loss(self.model, features, batch.targets,
                             self.config.training.label_smoothing)

    @torch.no_grad()
    def validate(self) -> Validation:
        """Perplexity, loss (nats per token) and bits per character on the dev text, and a
        short generated sample."""
        return Validation(self.mode.score(self.model, self.dev).metrics(), self.sample_lines())

    def sample_lines(self) -> list[str]:
        """A short sample (seeded: comparable from one validation to the next) for the log."""
        generator = Generator(self.config, self.model, self.tokenizer, self.conditions,
                              self.device)
        max_tokens = min(self.config.generation.max_tokens,
                         SAMPLE_TOKENS.get(self.tokenizer.kind, 40))
        labels = (list(self.conditions.labels[:SAMPLE_CONDITIONS])
                  if self.conditions is not None and self.conditions.kind == "label" else [None])
        if self.conditions is not None and self.conditions.kind == "features":
            return []  # no feature vector to condition on
        lines = []
        for label in labels:
            found = generator.generate("", max_tokens=max_tokens, num_samples=1,
                                       seed=self.config.training.seed, condition=label)[0]
            heading = "sample:" if label is None else f"sample ({label}):"
            lines += [heading, *(f"  {line}" for line in found.text.splitlines())]
        return lines

    # ---- state outside the model (the stream's carried state) ----

    def state_dict(self) -> dict[str, Any]:
        """What the mode carries between batches, so a resumed run continues exactly."""
        return self.mode.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode.load_state_dict(state)
