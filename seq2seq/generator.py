"""Language-model inference: one path used by validation, the CLI and the Python API.

    from seq2seq import Generator
    generator = Generator.from_pretrained("runs/shakespeare_char_lstm")
    generator.generate("ROMEO:", max_tokens=300, temperature=0.8, seed=1)[0].text
    generator.perplexity(["To be, or not to be, that is the question:"]).ppl
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import datasets
import torch

from .config import Config, GenerationConfig
from .data.batching import BucketBatchSampler
from .data.language_model import (
    Conditions,
    LineCorpus,
    LMTexts,
    TokenStream,
    evaluation_layout,
    line_end_id,
    make_lines_batch,
    start_id,
    tokenize_lines,
    tokenize_stream,
)
from .errors import UserError
from .export.folder import is_export_dir
from .fast_search import beam_search, sample
from .models.functional import PackedCopies, packed_weights, sequence_loss
from .models.language_model import LanguageModel, LMState
from .pretrained import load_tokenizers, open_run, weights_path
from .run_directory import RunDirectory, load_weights
from .runtime import fit_threads, select_device
from .search import Hypothesis
from .tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

STREAM_WINDOW = 256  # tokens per scoring step of a stream (at least data.bptt)
STREAM_ROWS = 32  # a stream is scored as this many parallel rows (fewer for short texts)


class UnknownSymbolsWarning(UserWarning):
    """A prompt held symbols outside the vocabulary; they were read as unknown."""


@dataclass
class Generation:
    text: str  # the prompt followed by the generated continuation
    continuation: str  # the generated text alone
    log_prob: float  # model log-probability of the generated tokens (and of </s> if it ended)
    tokens: int  # generated tokens, </s> not counted
    finished: bool  # ended with </s> (else it stopped at max_tokens)
    seed: int | None = None  # the sampling seed (None for greedy and beam search)


@dataclass(frozen=True)
class Perplexity:
    ppl: float  # exp(loss)
    bpc: float  # bits per character of the text: total nats / ln 2 / characters
    loss: float  # mean negative log-likelihood per token, in nats
    tokens: int  # tokens scored (line ends included)
    characters: int  # characters of the text (one per line end included)

    def metrics(self) -> dict[str, float]:
        return {"ppl": self.ppl, "loss": self.loss, "bpc": self.bpc}


def scores_from_nll(nll: float, tokens: int, characters: int) -> Perplexity:
    """Summed NLL (nats) over ``tokens`` predictions covering ``characters`` -> the scores."""
    loss = nll / max(tokens, 1)
    return Perplexity(ppl=math.exp(min(loss, 50.0)), bpc=nll / math.log(2) / max(characters, 1),
                      loss=loss, tokens=tokens, characters=characters)


# --------------------------------------------------------------------------------------
# Scoring (validation, evaluate, Generator.perplexity)


@torch.no_grad()
def score_stream(model: LanguageModel, stream: TokenStream, device: torch.device,
                 rows: int = STREAM_ROWS, window: int = STREAM_WINDOW) -> Perplexity:
    """Every token of a stream predicted from all the text before it (state carried)."""
    model.eval()
    inputs, targets = evaluation_layout(stream.ids, rows, window)
    state, nll, count = None, 0.0, 0
    for start in range(0, inputs.shape[1], window):
        x = torch.from_numpy(inputs[:, start: start + window]).to(device).long()
        y = torch.from_numpy(targets[:, start: start + window]).to(device).long()
        features, state = model(x, state)
        _, window_nll, tokens = sequence_loss(model, features, y)
        nll += float(window_nll)
        count += tokens
    return scores_from_nll(nll, count, stream.characters)


@torch.no_grad()
def score_lines(model: LanguageModel, corpus: LineCorpus, device: torch.device,
                batch_size: int = 256, batch_tokens: int = 8192) -> Perplexity:
    """Every line predicted from <s> (and its condition), </s> included."""
    model.eval()
    sampler = BucketBatchSampler(corpus.ids.lengths()[corpus.rows], batch_size=batch_size,
                                 batch_tokens=batch_tokens, shuffle=False)
    nll, count = 0.0, 0
    for batch_rows in sampler.epoch_batches(0):
        fit_threads()
        batch = make_lines_batch(corpus, corpus.rows[batch_rows]).to(device)
        features, _ = model(batch.inputs, None, batch.conditions)
        _, batch_nll, tokens = sequence_loss(model, features, batch.targets)
        nll += float(batch_nll)
        count += tokens
    return scores_from_nll(nll, count, corpus.characters)


# --------------------------------------------------------------------------------------
# The inference object


class Generator:
    """A trained language model loaded from a run directory."""

    def __init__(self, config: Config, model: LanguageModel, tokenizer: Tokenizer,
                 conditions: Conditions | None, device: torch.device,
                 run: RunDirectory | None = None) -> None:
        self.config = config
        self.run = run  # where it was loaded from (None for a model built in memory)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.conditions = conditions
        self.device = device
        self.start = start_id(tokenizer, config.data.lm_mode)
        # Tokens training never predicts are never generated: <pad>, <s>, and </s> in a
        # stream whose lines end with another symbol (a character model's newline).
        never = [PAD_ID, BOS_ID]
        if config.data.lm_mode == "stream" and line_end_id(tokenizer) != EOS_ID:
            never.append(EOS_ID)
        self.searched = _Restricted(self.model, never)
        # The search's weights packed at the first call, kept for the next ones.
        self.packed = PackedCopies()

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str = "auto",
                        weights: str | Path | None = None) -> Generator:
        """Load config, tokenizer, conditions and ``model.safetensors`` (or ``weights``); or,
        from an export folder, its graphs to run with ONNX Runtime."""
        if is_export_dir(run_dir):
            from .export.backend import OnnxLanguageModel, open_export

            folder, config = open_export(run_dir, "language_model", device, weights)
            tokenizer, _ = load_tokenizers(folder, config)
            conditions = Conditions.load(folder.path) if config.data.condition else None
            # The graphs stand in for a LanguageModel: they offer what inference calls.
            model = cast(LanguageModel, OnnxLanguageModel(folder))
            return cls(config, model, tokenizer, conditions, torch.device("cpu"))
        run, config = open_run(run_dir, "language_model")
        tokenizer, _ = load_tokenizers(run, config)
        conditions = Conditions.load(run.path) if config.data.condition else None
        model = LanguageModel(config.model, tokenizer.vocab_size,
                              conditions.inputs if conditions else 0)
        load_weights(model, weights_path(run, weights))
        return cls(config, model, tokenizer, conditions, select_device(device), run)

    # ---- generation ----

    def generate(self, prompt: str = "", max_tokens: int | None = None,
                 temperature: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, greedy: bool | None = None,
                 beam_size: int | None = None, num_samples: int | None = None,
                 seed: int | None = None, condition: str | None = None,
                 on_token: Callable[[int, str], None] | None = None) -> list[Generation]:
        """Continue ``prompt`` (empty: from the start symbol) until </s> or ``max_tokens``.

        Options default to the run's ``generation`` config. ``greedy`` takes the most
        probable token at every step; else ``beam_size`` > 1 runs beam search (the
        ``num_samples`` best continuations); else tokens are sampled with ``temperature``,
        ``top_k`` and ``top_p`` from a generator seeded with ``seed`` (same seed, same text;
        None draws a fresh seed). ``condition``: a label (or feature vector) of a conditioned
        model. ``on_token(sample, text)`` receives each sample's text as it is produced.
        Symbols of the prompt outside the vocabulary are read as unknown, with an
        :class:`UnknownSymbolsWarning`.
        """
        options = self.generation_options(
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            greedy=greedy, beam_size=beam_size, num_samples=num_samples)
        if seed is not None and not 0 <= seed < 2**63:  # as the server's JSON takes it
            raise UserError(f"seed (--seed) must be in [0, 2^63), got {seed}")
        condition_tensor = self._condition(condition)
        context = [self.start] + self._encode_prompt(prompt)
        beam = not options.greedy and options.beam_size > 1
        copies = 1 if beam else options.num_samples
        primed, first = self._prime(context, condition_tensor)
        rows = torch.zeros(copies, dtype=torch.long, device=self.device)
        state, first = primed.select(rows), first.expand(copies).contiguous()
        limits = torch.full((copies,), options.max_tokens + 1, dtype=torch.long)  # + </s>
        if beam:
            with packed_weights(self.packed):
                hypotheses = beam_search(self.searched, state, first, limits, options.beam_size,
                                         alpha=1.0, n_best=options.num_samples)[0]
            if on_token is not None:
                for i, h in enumerate(hypotheses):
                    on_token(i, self._continuation(context, h.tokens))
        else:
            if options.greedy:
                seed = None
            elif seed is None:
                seed = secrets.randbits(63)  # not from torch's global generator: training's
            generator = torch.Generator().manual_seed(seed if seed is not None else 0)
            stream = _TextStream(self.tokenizer, context, copies, on_token) if on_token else None
            with packed_weights(self.packed):
                hypotheses = sample(self.searched, state, first, limits, options.temperature,
                                    1 if options.greedy else options.top_k, options.top_p,
                                    generator=generator, on_step=stream)
        results = self._results(prompt, context, primed, hypotheses, options.max_tokens)
        for result in results:
            result.seed = None if beam else seed
        return results

    def generation_options(self, **options: Any) -> GenerationConfig:
        """The run's generation settings with the given non-None options replaced, checked."""
        chosen = {k: v for k, v in options.items() if v is not None}
        merged = dataclasses.replace(self.config.generation, **chosen)
        checks = [
            (merged.max_tokens >= 1, "max_tokens (--max-tokens) must be >= 1"),
            (merged.temperature > 0 and math.isfinite(merged.temperature),
             "temperature (--temperature) must be > 0 (lower is more conservative)"),
            (0.0 < merged.top_p <= 1.0, "top_p (--top-p) must be in (0, 1] (1 = off)"),
            (merged.top_k >= 0, "top_k (--top-k) must be >= 0 (0 = off)"),
            (merged.beam_size >= 1, "beam_size (--beam-size) must be >= 1"),
            (merged.num_samples >= 1, "num_samples (--num-samples) must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                name = message.split(" ")[0]
                raise UserError(f"{message}, got {getattr(merged, name)}")
        if merged.greedy and merged.num_samples > 1:
            raise UserError("greedy search gives one text: use num_samples (--num-samples) 1, "
                            "or sample instead")
        if not merged.greedy and merged.beam_size > 1 and merged.num_samples > merged.beam_size:
            raise UserError(f"beam search returns at most beam_size ({merged.beam_size}) texts; "
                            f"num_samples (--num-samples) is {merged.num_samples}")
        return merged

    def _condition(self, condition: str | None) -> torch.Tensor | None:
        if self.conditions is None:
            if condition is not None:
                raise UserError("this model is not conditioned: leave out the condition "
                                "(--condition)")
            return None
        if condition is None:
            raise UserError(f"this model is conditioned on a {self.conditions.kind}: give a "
                            f"condition (--condition), {self.conditions.expected()}")
        return self.conditions.tensor(condition, "condition (--condition)").to(self.device)

    def _encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt)
        unknown = sorted({piece for piece, i in zip(self.tokenizer.tokenize(prompt), ids)
                          if i == UNK_ID})
        if UNK_ID in ids:
            shown = ", ".join(repr(s) for s in unknown[:10]) or "some symbols"
            warnings.warn(f"the prompt holds {ids.count(UNK_ID)} symbol(s) outside the model's "
                          f"vocabulary ({shown}); they were read as unknown",
                          UnknownSymbolsWarning, stacklevel=3)
        return ids

    @torch.no_grad()
    def _prime(self, context: list[int], condition: torch.Tensor | None
               ) -> tuple[LMState, torch.Tensor]:
        """Read the context but its last token -> (the state after it [1 row], the last token)."""
        ids = torch.tensor([context], dtype=torch.long, device=self.device)
        state = self.model.initial_state(1, condition, self.device)
        if len(context) > 1:
            _, state = self.model(ids[:, :-1], state)
        return state, ids[0, -1:]

    def _results(self, prompt: str, context: list[int], primed: LMState,
                 hypotheses: list[Hypothesis], max_tokens: int) -> list[Generation]:
        finished = [len(h.tokens) < max_tokens for h in hypotheses]
        sequences = [h.tokens + ([EOS_ID] if done else []) for h, done in zip(hypotheses, finished)]
        log_probs = self._log_probs(context[-1], primed, sequences)
        results = []
        for h, done, log_prob in zip(hypotheses, finished, log_probs):
            continuation = self._continuation(context, h.tokens)
            results.append(Generation(prompt + continuation, continuation, log_prob,
                                      len(h.tokens), done))
        return results

    def _continuation(self, context: list[int], tokens: list[int]) -> str:
        """The text ``tokens`` add after the context (decoded together: spacing is right)."""
        base = self.tokenizer.decode(context)
        full = self.tokenizer.decode(context + list(tokens))
        return full[len(base):] if full.startswith(base) else self.tokenizer.decode(tokens)

    @torch.no_grad()
    def _log_probs(self, last: int, primed: LMState, sequences: list[list[int]]) -> list[float]:
        """Model log-probability of each generated sequence, read on from the primed state
        (so the prompt's positions cost no logits). The searches' own sums would include the
        </s> they force at max_tokens."""
        width = max(len(s) for s in sequences)
        inputs = torch.full((len(sequences), max(width, 1)), PAD_ID, dtype=torch.long)
        targets = torch.full_like(inputs, PAD_ID)
        for r, generated in enumerate(sequences):
            row = torch.tensor([last] + generated, dtype=torch.long)
            inputs[r, : len(generated)] = row[:-1]
            targets[r, : len(generated)] = row[1:]
        state = primed.select(torch.zeros(len(sequences), dtype=torch.long, device=self.device))
        features, _ = self.model(inputs.to(self.device), state)
        log_probs = torch.log_softmax(self.model.logits(features).float(), dim=-1)
        targets = targets.to(self.device)
        picked = log_probs.gather(2, targets.unsqueeze(2)).squeeze(2)
        return picked.masked_fill(targets == PAD_ID, 0.0).sum(1).tolist()

    # ---- scoring ----

    def perplexity(self, texts: Sequence[str],
                   conditions: Sequence[str] | None = None) -> Perplexity:
        """Perplexity and bits per character of ``texts``: lines of one running text for a
        stream model; separate texts (each with its condition, if conditioned) otherwise."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        columns = {"text": texts, "line": list(range(1, len(texts) + 1))}
        if self.conditions is not None:
            if conditions is None or len(conditions) != len(texts):
                raise UserError(f"this model is conditioned on a {self.conditions.kind}: give "
                                "one condition per text")
            columns["condition"] = [str(c) for c in conditions]
        elif conditions is not None:
            raise UserError("this model is not conditioned: leave out the conditions")
        if not texts:
            raise UserError("no texts to score")
        return self.score(LMTexts(datasets.Dataset.from_dict(columns), "texts",
                                  plain=self.conditions is None))

    def score(self, texts: LMTexts, batch_size: int | None = None) -> Perplexity:
        """Perplexity of loaded text (a split or file read with the run's data settings).

        ``batch_size``: parallel rows of a stream, or lines per batch.
        """
        if self.config.data.lm_mode == "stream":
            window = max(STREAM_WINDOW, self.config.data.bptt)
            return score_stream(self.model, tokenize_stream(texts, self.tokenizer), self.device,
                                rows=batch_size or STREAM_ROWS, window=window)
        corpus = tokenize_lines(texts, self.tokenizer, None, self.conditions,
                                self.config.data.bad_rows)
        return score_lines(self.model, corpus, self.device, batch_size=batch_size or 256)


class _Restricted:
    """The model as the searches see it: ``decode_step`` with some tokens made impossible."""

    def __init__(self, model: LanguageModel, never: list[int]) -> None:
        self.model = model
        self.never = torch.tensor(never, dtype=torch.long)

    def decode_step(self, tokens: torch.Tensor, state: LMState
                    ) -> tuple[torch.Tensor, LMState, None]:
        log_probs, state, _ = self.model.decode_step(tokens, state)
        log_probs[:, self.never.to(log_probs.device)] = float("-inf")
        return log_probs, state, None


class _TextStream:
    """Turns the tokens a search draws into the text each sample gains, for ``on_token``.

    A token's text is the difference between decoding the last few ids with and without
    it, so word spacing and sentencepiece's word boundaries come out right at O(1) a token.
    """

    WINDOW = 8

    def __init__(self, tokenizer: Tokenizer, context: list[int], rows: int,
                 callback: Callable[[int, str], None]) -> None:
        self.tokenizer = tokenizer
        self.ids = [list(context[-self.WINDOW:]) for _ in range(rows)]
        self.callback = callback

    def __call__(self, rows: list[int], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens):
            if token == EOS_ID:
                continue
            ids = self.ids[row]
            ids.append(token)
            before = self.tokenizer.decode(ids[-self.WINDOW:-1])
            after = self.tokenizer.decode(ids[-self.WINDOW:])
            piece = after[len(before):] if after.startswith(before) else after
            del ids[: -self.WINDOW]
            if piece:
                self.callback(row, piece)
