"""Greedy search, beam search and sampling, written plainly: the reference.

A search starts from a decoder state the head has built (the translator's encoded source, a
language model's consumed prompt) and the token to feed first (<s>, or the prompt's last
token). The model supplies ``decode_step(tokens [N], state) -> (log_probs [N, V], state,
attention or None)``; the state supplies ``select(index)``, which makes row i of the new
state row index[i] of the old (to follow beams, or to copy a sequence into K beams).

All B sequences (B x K rows for beam search) advance together, one token per step, until the
last has ended; a sequence that has ended rides along and its results stop changing.
``seq2seq.fast_search`` gives the same results faster (finished sequences leave the batch,
waiting ones join it); the inference classes use it, and tests/test_search.py holds the two
equal.

Length rules shared by all: a hypothesis holds at most ``max_lengths[i]`` tokens counting
its final </s>; </s> is forbidden before ``min_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .tokenizers import BOS_ID, EOS_ID

NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    tokens: list[int]  # without <s> and </s>
    score: float  # log-probability divided by the length penalty (what the search ranks by)
    log_prob: float  # summed token log-probabilities, </s> included


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_lengths: torch.Tensor, ratio: float, extra: int,
                       cap: int = 1024) -> torch.Tensor:
    """Per-sentence output budget: ratio * source length + extra tokens (>= 1)."""
    return (src_lengths.float() * ratio + extra).long().clamp(1, cap)


def start_tokens(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B] <s> tokens: what a translator's decoder is fed first."""
    return torch.full((batch,), BOS_ID, dtype=torch.long, device=device)


def block_repeated_ngrams(log_probs: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Forbid (in place) each token that would repeat an n-gram already in ``history`` [N, t]."""
    if n <= 0 or history.size(1) < n:
        return
    prefix = history[:, history.size(1) - (n - 1):]  # the last n-1 tokens: [N, n-1]
    windows = history.unfold(1, n, 1)  # every n-gram so far: [N, t-n+1, n]
    match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(-1)
    rows, cols = match.nonzero(as_tuple=True)
    log_probs[rows, windows[rows, cols, -1]] = NEG_INF


def restrict_length(log_probs: torch.Tensor, lengths: torch.Tensor | int,
                    max_lengths: torch.Tensor, min_length: int) -> None:
    """In place: no </s> before min_length; only </s> at a row's last allowed position.
    ``lengths``: the tokens each row has so far ([N], or one int for all rows)."""
    if isinstance(lengths, int):
        if lengths + 1 < min_length:
            log_probs[:, EOS_ID] = NEG_INF
    elif min_length > 1:
        log_probs[lengths + 1 < min_length, EOS_ID] = NEG_INF
    at_limit = max_lengths == lengths + 1
    if bool(at_limit.any()):
        eos = log_probs[at_limit, EOS_ID].clone()
        log_probs[at_limit] = NEG_INF
        log_probs[at_limit, EOS_ID] = torch.where(torch.isfinite(eos), eos, 0.0)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` best scores and the smallest set whose probability reaches
    ``top_p`` (nucleus); the rest become -inf. [N, V] -> [N, V]; the best token always stays."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, NEG_INF)
    return logits


Pick = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Chooses each row's next token: (log_probs [N, V], history [N, t]) -> tokens [N]."""


def most_probable(no_repeat_ngram: int = 0) -> Pick:
    """Greedy search's choice: the best token that repeats no ``no_repeat_ngram``-gram."""
    def pick(log_probs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        block_repeated_ngrams(log_probs, history, no_repeat_ngram)
        return log_probs.max(dim=-1).indices
    return pick


def drawn(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
          generator: torch.Generator | None = None) -> Pick:
    """Sampling's choice: a draw from the distribution scaled by ``temperature`` and filtered
    by top-k and top-p (``top_k=1`` is greedy, without a draw)."""
    def pick(log_probs: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # Scaled from the row's best (0), so a tiny temperature gives -inf for the rest
        # instead of -inf everywhere (NaN probabilities); below 1e-30, which already keeps
        # only the best, a float32 temperature would round to 0 (0 / 0).
        best = log_probs.max(dim=-1, keepdim=True).values
        logits = filter_logits((log_probs - best) / max(temperature, 1e-30), top_k, top_p)
        if top_k == 1:
            return logits.argmax(-1)
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu() if generator is not None else probs, 1,
                                 generator=generator).view(-1).to(log_probs.device)
    return pick


def pick_for_running(pick: Pick, log_probs: torch.Tensor, history: torch.Tensor,
                     running: torch.Tensor) -> torch.Tensor:
    """The rows' next tokens [N]: ``pick``'s choice for the running rows (only they draw),
    </s> for the finished ones."""
    if bool(running.all()):
        return pick(log_probs, history)
    rows = running.nonzero(as_tuple=True)[0]
    tokens = torch.full((running.numel(),), EOS_ID, dtype=torch.long, device=log_probs.device)
    tokens[rows] = pick(log_probs[rows], history[rows])
    return tokens


@torch.no_grad()
def one_path_search(model: Any, state: Any, first_tokens: torch.Tensor,
                    max_lengths: torch.Tensor, pick: Pick, min_length: int = 0,
                    on_step: Callable[[list[int], list[int]], None] | None = None
                    ) -> list[Hypothesis]:
    """Grow one path per sequence, a token per step, until </s> or its length budget.

    Args:
        state: the decoder state of B sequences; first_tokens: [B] the tokens fed first;
        max_lengths: [B] output budgets counting </s>; pick: chooses the next tokens of the
        running rows (``most_probable``, ``drawn``); on_step(rows, tokens), if given, gets
        the running rows and their new tokens after every step (to stream text).
    Returns:
        one Hypothesis per sequence, in input order (score = log_prob: no length penalty).
    """
    batch, device = first_tokens.size(0), first_tokens.device
    max_lengths = max_lengths.to(device)
    tokens = first_tokens
    history = torch.empty((batch, 0), dtype=torch.long, device=device)
    log_prob = torch.zeros(batch, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)
    for step in range(int(max_lengths.max())):
        log_probs, state, _ = model.decode_step(tokens, state)
        restrict_length(log_probs, step, max_lengths, min_length)
        tokens = pick_for_running(pick, log_probs, history, running)
        chosen = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
        log_prob += torch.where(running, chosen, 0.0)  # a finished sequence's stays
        history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        if on_step is not None:
            rows = running.nonzero(as_tuple=True)[0]
            on_step(rows.tolist(), tokens[rows].tolist())
        running &= tokens != EOS_ID
        if not bool(running.any()):
            break
    hypotheses = []
    for row in range(batch):
        length = int((history[row] == EOS_ID).nonzero()[0]) + 1  # up to its first </s>
        hypotheses.append(Hypothesis(history[row, : length - 1].tolist(),
                                     float(log_prob[row]), float(log_prob[row])))
    return hypotheses


def greedy_search(model: Any, state: Any, first_tokens: torch.Tensor,
                  max_lengths: torch.Tensor, min_length: int = 0,
                  no_repeat_ngram: int = 0) -> list[Hypothesis]:
    """The most probable token at every step (see ``one_path_search``)."""
    return one_path_search(model, state, first_tokens, max_lengths,
                           most_probable(no_repeat_ngram), min_length)


def sample(model: Any, state: Any, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, min_length: int = 0,
           on_step: Callable[[list[int], list[int]], None] | None = None
           ) -> list[Hypothesis]:
    """Draw each token (see ``drawn``); a seeded ``generator`` makes the draw reproducible.
    The log_prob is the unfiltered model's."""
    return one_path_search(model, state, first_tokens, max_lengths,
                           drawn(temperature, top_k, top_p, generator), min_length, on_step)


@dataclass
class Candidates:
    """The 2K best one-token continuations of each of A sentences over its K beams, best
    first: scores [A, 2K], the beam each extends [A, 2K], its token [A, 2K], and whether it
    is a possible </s> [A, 2K]."""

    scores: torch.Tensor
    beams: torch.Tensor
    tokens: torch.Tensor
    is_eos: torch.Tensor

    @classmethod
    def best(cls, scores: torch.Tensor, log_probs: torch.Tensor) -> Candidates:
        """From the beams' scores [A, K] and their next-token log-probs [A*K, V]."""
        n_seq, k = scores.shape
        vocab = log_probs.size(-1)
        totals = (scores.view(-1, 1) + log_probs).view(n_seq, k * vocab)  # id = beam * V + token
        best, ids = totals.topk(min(2 * k, k * vocab), dim=-1)
        tokens = ids % vocab
        return cls(best, ids // vocab, tokens, (tokens == EOS_ID) & torch.isfinite(best))

    def alive(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The K best that do not end in </s> (in rank order): their scores [A, K] (-inf
        where fewer than K are left), the rows they extend [A*K] and their tokens [A*K]."""
        alive = torch.argsort(self.is_eos.to(torch.uint8), dim=1, stable=True)[:, :k]
        scores = self.scores.gather(1, alive).masked_fill(self.is_eos.gather(1, alive), NEG_INF)
        first_row = torch.arange(alive.size(0), device=alive.device).unsqueeze(1) * k
        rows = (first_row + self.beams.gather(1, alive)).view(-1)
        return scores, rows, self.tokens.gather(1, alive).view(-1)


@torch.no_grad()
def beam_search(model: Any, state: Any, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
                beam_size: int, alpha: float = 1.0, n_best: int = 1, min_length: int = 0,
                no_repeat_ngram: int = 0) -> list[list[Hypothesis]]:
    """Batched beam search; all sentences x beams advance as one [B*K, V] tensor.

    Each step takes the 2K best continuations of each sentence; those ending in </s> that
    rank among the top K are finished (scored with the GNMT length penalty ``alpha``), the
    best K others stay alive. A sentence is done once it has ``n_best`` finished hypotheses
    that no alive one can beat, or at its length budget; beam_size 1 is greedy search.

    Args:
        state: the decoder state of B sentences; first_tokens: [B]; max_lengths: [B].
    Returns:
        per sentence (input order), its ``n_best`` hypotheses, best first.
    """
    batch, k, device = first_tokens.size(0), beam_size, first_tokens.device
    sentence_of_row = torch.arange(batch, device=device).repeat_interleave(k)  # [B*K]
    state = state.select(sentence_of_row)
    row_limits = max_lengths.to(device)[sentence_of_row]
    tokens = first_tokens.repeat_interleave(k)
    scores = torch.full((batch, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start identical: one alive, or they would be duplicates
    history = torch.empty((batch * k, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    searching = torch.ones(batch, dtype=torch.bool, device=device)
    for step in range(int(max_lengths.max())):
        log_probs, state, _ = model.decode_step(tokens, state)  # [B*K, V]
        restrict_length(log_probs, step, row_limits, min_length)
        block_repeated_ngrams(log_probs, history, no_repeat_ngram)
        cand = Candidates.best(scores, log_probs)

        # </s> among a sentence's top K candidates finishes a hypothesis.
        for b, c in (cand.is_eos[:, :k] & searching.unsqueeze(1)).nonzero().tolist():
            row = b * k + int(cand.beams[b, c])
            log_prob = float(cand.scores[b, c])
            finished[b].append(Hypothesis(history[row].tolist(),
                                          log_prob / length_penalty(step + 1, alpha), log_prob))

        # Done: no alive hypothesis can still beat the n_best-th finished one. Alive
        # log-probs only fall, so with alpha = 0 this is exact; with alpha > 0 it assumes
        # the hypothesis would end now (the usual heuristic).
        nth_best = torch.tensor([_nth_best_score(hyps, n_best) for hyps in finished],
                                device=device)
        best_alive = cand.scores.masked_fill(cand.is_eos, NEG_INF).max(dim=1).values
        done = ((best_alive / length_penalty(step + 2, alpha) <= nth_best)
                | (max_lengths.to(device) <= step + 1))
        searching &= ~done
        if not bool(searching.any()):
            break

        scores, rows, tokens = cand.alive(k)
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
        state = state.select(rows)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


def _nth_best_score(hypotheses: list[Hypothesis], n: int) -> float:
    """The n-th best score among ``hypotheses``; -inf while there are fewer than n."""
    if len(hypotheses) < n:
        return NEG_INF
    return sorted((h.score for h in hypotheses), reverse=True)[n - 1]
