"""Greedy search, beam search and sampling over any model with a ``decode_step``.

A search starts from a decoder state the head has built (the translator's encoded source, a
language model's consumed prompt) and the token to feed first (<s>, or the prompt's last
token). The model supplies ``decode_step(tokens [N], state) -> (log_probs [N, V], state,
attention or None)``; the state supplies ``select(index)``, which reorders its batch rows,
and ``reorder_beams(index)``, the same for rows that move only among one sequence's beams
(so what is constant per sequence, such as a translator's encoded source, need not move).

Every search works on the whole batch as one tensor (batch x beam rows for beam search) and
drops finished sequences from the active batch as it goes, so the per-step work shrinks
instead of carrying finished rows to the longest sequence's end. Under CPU bfloat16 autocast
the batch shrinks in steps of ``AUTOCAST_DROP_MULTIPLE`` sequences instead of one (see
``default_drop_multiple``). Greedy search can also take a stream of groups
(``greedy_search_stream``) and refill the rows of finished sequences with waiting ones
(continuous batching), which needs states with ``append``.

Length rules shared by all: a hypothesis holds at most ``max_lengths[i]`` tokens counting
its final </s>; </s> is forbidden before ``min_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .tokenizers import BOS_ID, EOS_ID

NEG_INF = float("-inf")

# Under CPU bfloat16 autocast, oneDNN compiles a kernel for every new matrix shape. A batch that
# drops its finished sequences one at a time has a new row count, and so pays for new kernels,
# at nearly every step of its tail; keeping the count a multiple of 8 (finished sequences ride
# along as filler) makes greedy decoding about a third faster there. float32 gains nothing.
AUTOCAST_DROP_MULTIPLE = 8


def default_drop_multiple(device: torch.device) -> int:
    """How many finished sequences at a time a search drops from its batch on ``device``,
    under the autocast state of the moment."""
    if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return AUTOCAST_DROP_MULTIPLE
    return 1


def _sequences_to_keep(running: torch.Tensor, multiple: int,
                       joining: int = 0) -> torch.Tensor | None:
    """Indices of the sequences to carry on with: the running ones in order, then finished
    ones as filler until, with ``joining`` new sequences, the count is a multiple of
    ``multiple``; None when that is all of them."""
    n_running = int(running.sum())
    n_kept = -(-(n_running + joining) // multiple) * multiple - joining
    if n_kept >= running.numel():
        return None
    return torch.argsort((~running).to(torch.uint8), stable=True)[:n_kept]


@dataclass
class Hypothesis:
    tokens: list[int]  # without <s> and </s>
    score: float  # log-probability divided by the length penalty (what the search ranks by)
    log_prob: float  # summed token log-probabilities, </s> included


def length_penalty(length: torch.Tensor | int, alpha: float) -> torch.Tensor | float:
    """GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_lengths: torch.Tensor, ratio: float, extra: int,
                       cap: int = 1024) -> torch.Tensor:
    """Per-sentence output budget: ratio * source length + extra tokens (>= 1)."""
    return (src_lengths.float() * ratio + extra).long().clamp(1, cap)


def block_repeated_ngrams(log_probs: torch.Tensor, history: torch.Tensor, n: int,
                          lengths: torch.Tensor | None = None) -> None:
    """Forbid (in place) each token that would repeat an n-gram already in ``history`` [N, t].

    Rows shorter than t (``lengths`` [N]) are right-aligned, left-padded with -1; a row with
    fewer than n tokens has no n-gram to repeat."""
    if n <= 0 or history.size(1) < n:
        return
    prefix = history[:, history.size(1) - (n - 1):]  # the last n-1 tokens: [N, n-1]
    windows = history.unfold(1, n, 1)  # every n-gram so far: [N, t-n+1, n]
    match = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(-1)
    if lengths is not None:  # padding-only prefixes would match padding-only windows
        match &= (lengths >= n).unsqueeze(1)
    rows, cols = match.nonzero(as_tuple=True)
    log_probs[rows, windows[rows, cols, -1]] = NEG_INF


def _restrict_length(log_probs: torch.Tensor, lengths: torch.Tensor | int,
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


def start_tokens(batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B] <s> tokens: what a translator's decoder is fed first."""
    return torch.full((batch,), BOS_ID, dtype=torch.long, device=device)


@dataclass
class SearchGroup:
    """Sequences ready to be searched together: a decoder state with one row per sequence.

    keys: the caller's id of each row (results come back under these); first_tokens: [B] the
    tokens fed first; max_lengths: [B] output budgets counting </s>.
    """

    keys: list[int]
    state: Any
    first_tokens: torch.Tensor
    max_lengths: torch.Tensor


@torch.no_grad()
def greedy_search(model, state, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
                  min_length: int = 0, no_repeat_ngram: int = 0,
                  drop_multiple: int | None = None) -> list[Hypothesis]:
    """Pick the most probable token at every step.

    Args:
        state: the decoder state of B sequences; first_tokens: [B] the tokens fed first;
        max_lengths: [B] output budget incl. </s>; drop_multiple: finished sequences leave
        the batch so many at a time (default: ``default_drop_multiple``); results do not
        depend on it.
    Returns:
        one Hypothesis per sequence, in input order.
    """
    return _search_one_group(model, state, first_tokens, max_lengths, min_length,
                             _most_probable(no_repeat_ngram), drop_multiple=drop_multiple)


def greedy_search_stream(model, groups: Iterable[SearchGroup], min_length: int = 0,
                         no_repeat_ngram: int = 0, drop_multiple: int | None = None
                         ) -> Iterator[tuple[int, Hypothesis]]:
    """Greedy search over a stream of groups with continuous batching.

    The batch starts as the first group. As its sequences finish, sequences of the next
    groups take their rows, so the decoder keeps working on about one group's worth of rows
    instead of finishing each group's long tail at a few rows (where a step costs nearly as
    much as at a full batch). Each group is only encoded (its state built) when its turn
    comes. States must support ``append`` when there is more than one group.

    Yields (key, Hypothesis) as sequences finish, not in input order.
    """
    return _extend_paths(model, groups, min_length, _most_probable(no_repeat_ngram),
                         drop_multiple=drop_multiple)


def _most_probable(no_repeat_ngram: int):
    """Greedy search's ``pick``: the best token not blocked by ``no_repeat_ngram``."""
    def pick(log_probs: torch.Tensor, history: torch.Tensor,
             lengths: torch.Tensor) -> torch.Tensor:
        block_repeated_ngrams(log_probs, history, no_repeat_ngram, lengths)
        return log_probs.max(dim=-1).indices
    return pick


def _search_one_group(model, state, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
                      min_length: int, pick, on_step=None,
                      drop_multiple: int | None = None) -> list[Hypothesis]:
    """``_extend_paths`` over the B rows of one state -> B hypotheses in row order."""
    group = SearchGroup(list(range(first_tokens.size(0))), state, first_tokens, max_lengths)
    found = dict(_extend_paths(model, [group], min_length, pick, on_step, drop_multiple))
    return [found[i] for i in group.keys]


@dataclass
class _Paths:
    """The rows a one-path search is extending, one sequence each (finished sequences may
    ride along as filler). history [N, W] holds each row's tokens so far right-aligned, left
    padded with -1 (rows join at different steps); lengths [N] counts them."""

    keys: torch.Tensor
    state: Any
    tokens: torch.Tensor
    max_lengths: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor
    running: torch.Tensor
    history: torch.Tensor

    @classmethod
    def start(cls, group: SearchGroup, index: torch.Tensor | None) -> _Paths:
        """Fresh paths for the group's rows ``index`` (None: all of them)."""
        device = group.first_tokens.device
        keys = torch.tensor(group.keys, device=device)
        state, first, limits = group.state, group.first_tokens, group.max_lengths.to(device)
        if index is not None:
            keys, first, limits = keys[index], first[index], limits[index]
            state = state.select(index)
        n = keys.numel()
        return cls(keys, state, first, limits, torch.zeros(n, device=device),
                   torch.zeros(n, dtype=torch.long, device=device),
                   torch.ones(n, dtype=torch.bool, device=device),
                   torch.empty((n, 0), dtype=torch.long, device=device))

    def select(self, index: torch.Tensor) -> _Paths:
        """The rows ``index``; history loses the columns that only padded them."""
        lengths = self.lengths[index]
        width = int(lengths.max()) if lengths.numel() else 0
        history = self.history[index, self.history.size(1) - width:]
        return _Paths(self.keys[index], self.state.select(index), self.tokens[index],
                      self.max_lengths[index], self.log_probs[index], lengths,
                      self.running[index], history)

    def append(self, other: _Paths) -> _Paths:
        """These rows, then ``other``'s."""
        width = max(self.history.size(1), other.history.size(1))
        history = torch.cat([F.pad(h, (width - h.size(1), 0), value=-1)
                             for h in (self.history, other.history)])
        joined = [torch.cat([getattr(self, name), getattr(other, name)])
                  for name in ("keys", "tokens", "max_lengths", "log_probs", "lengths",
                               "running")]
        return _Paths(joined[0], self.state.append(other.state), *joined[1:], history)

    def grow(self, tokens: torch.Tensor, log_probs: torch.Tensor, state) -> None:
        """Extend every row, in place, by its chosen token [N] with its log-prob [N]."""
        self.tokens, self.state = tokens, state
        self.log_probs = self.log_probs + log_probs
        self.lengths = self.lengths + 1
        self.history = torch.cat([self.history, tokens.unsqueeze(1)], dim=1)

    def hypothesis(self, row: int) -> Hypothesis:
        """The finished path of ``row`` (its last token is </s>)."""
        length = int(self.lengths[row])
        log_prob = float(self.log_probs[row])
        tokens = self.history[row, self.history.size(1) - length: -1].tolist()
        return Hypothesis(tokens, log_prob, log_prob)


class _Waiting:
    """Sequences not yet admitted to the batch: the rest of the groups pulled so far, then
    the groups still to come, pulled (and so encoded) only when their rows are needed."""

    def __init__(self, groups: Iterable[SearchGroup]) -> None:
        self._groups = iter(groups)
        self._pulled: list[list] = []  # [group, rows taken] for pulled groups with rows left
        self.capacity = 0  # rows the batch may hold: the size of the group drawn from

    def count_at_least(self, n: int) -> int:
        """How many sequences wait, counted up to ``n`` (counting may pull groups)."""
        count = sum(len(group.keys) - taken for group, taken in self._pulled)
        while count < n:
            group = next(self._groups, None)
            if group is None:
                break
            if group.keys:
                self._pulled.append([group, 0])
                count += len(group.keys)
        if self._pulled:
            self.capacity = len(self._pulled[0][0].keys)
        return min(count, n)

    def take(self, n: int) -> _Paths | None:
        """Up to ``n`` waiting sequences as fresh paths, in order (None if none wait)."""
        n = self.count_at_least(n)
        paths = None
        while n > 0:
            entry = self._pulled[0]
            group, start = entry
            size = len(group.keys)
            end = min(size, start + n)
            index = (None if start == 0 and end == size else
                     torch.arange(start, end, device=group.first_tokens.device))
            piece = _Paths.start(group, index)
            paths = piece if paths is None else paths.append(piece)
            n -= end - start
            if end == size:
                self._pulled.pop(0)
            else:
                entry[1] = end
        return paths


@torch.no_grad()
def _extend_paths(model, groups: Iterable[SearchGroup], min_length: int, pick, on_step=None,
                  drop_multiple: int | None = None) -> Iterator[tuple[int, Hypothesis]]:
    """The loop greedy search and sampling share: each sequence grows one path, a token per
    step, until </s> or its length budget. Finished rows leave the batch ``drop_multiple``
    at a time; waiting sequences join when a group's worth of rows has room for at least
    ``max(drop_multiple, capacity // 8)`` of them (joining copies the batch's state, so not
    at every step).

    ``pick(log_probs [N, V], history [N, W], lengths [N]) -> tokens [N]`` chooses the next
    tokens (it may set scores to -inf in place). ``on_step(keys, tokens)``, if given, gets
    the running rows' keys and tokens after every step. Yields (key, Hypothesis), the
    log_prob summed from ``log_probs`` as ``pick`` left them.
    """
    waiting = _Waiting(groups)
    if waiting.count_at_least(1) == 0:
        return
    paths = waiting.take(waiting.capacity)
    multiple = drop_multiple or default_drop_multiple(paths.tokens.device)
    while True:
        log_probs, state, _ = model.decode_step(paths.tokens, paths.state)
        _restrict_length(log_probs, paths.lengths, paths.max_lengths, min_length)
        tokens = pick(log_probs, paths.history, paths.lengths)
        paths.grow(tokens, log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1), state)
        running = paths.running
        if on_step is not None:
            rows = running.nonzero(as_tuple=True)[0]
            on_step(paths.keys[rows].tolist(), tokens[rows].tolist())
        done = (tokens == EOS_ID) & running
        any_done = bool(done.any())
        if any_done:
            for row in done.nonzero(as_tuple=True)[0].tolist():
                yield int(paths.keys[row]), paths.hypothesis(row)
            running = paths.running = running & ~done
        n_running = int(running.sum())
        room = waiting.capacity - n_running
        joining = 0
        if room >= max(multiple, waiting.capacity // 8, 1) or (n_running == 0 and room > 0):
            joining = waiting.count_at_least(room)
        if n_running == 0 and joining == 0:
            return
        if not any_done and joining == 0:
            continue
        keep = _sequences_to_keep(running, multiple, joining)
        if keep is not None:
            paths = paths.select(keep)
        if joining:
            paths = paths.append(waiting.take(joining))


def best_continuations(log_probs: torch.Tensor, scores: torch.Tensor, n: int,
                       block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` best one-token continuations of each sequence's beams.

    Args:
        log_probs: [A*K, V] next-token log-probabilities of A sequences' K beams;
        scores: [A, K] the beams' scores so far.
    Returns:
        values [A, n], best first, of scores[a, b] + log_probs[a*K + b, v], and ids [A, n]
        of the continuations, b * V + v.

    The same as a top-n over the [A, K*V] sums, but cheaper: top-k with indices runs as scalar
    code over every value, while a block maximum is vectorised. So the maxima of blocks of
    ``block`` words come first, and the top-n runs over the n best blocks' words only; any of
    the n best values lies in one of them, as each block ranked above its own holds a larger
    value.
    """
    rows, vocab = log_probs.shape
    n_seq, k = scores.shape
    if vocab < 4 * block:
        return (scores.view(-1, 1) + log_probs).view(n_seq, k * vocab).topk(n, dim=-1)
    whole = vocab // block
    maxima = log_probs[:, : whole * block].view(rows, whole, block).amax(-1)
    if whole * block < vocab:  # the shorter last block
        maxima = torch.cat([maxima, log_probs[:, whole * block:].amax(-1, keepdim=True)], 1)
    n_blocks = maxima.size(1)
    maxima = (maxima + scores.view(-1, 1)).view(n_seq, k * n_blocks)
    best_blocks = maxima.topk(n, dim=-1).indices  # [A, n]
    beams = torch.div(best_blocks, n_blocks, rounding_mode="floor")
    words = ((best_blocks % n_blocks) * block).unsqueeze(-1) + torch.arange(
        block, device=log_probs.device)  # [A, n, block]
    in_vocab = words < vocab
    rows_of = torch.arange(n_seq, device=log_probs.device).unsqueeze(1) * k + beams  # [A, n]
    values = log_probs.view(-1)[rows_of.unsqueeze(-1) * vocab + words.clamp(max=vocab - 1)]
    values = values.masked_fill(~in_vocab, NEG_INF) + scores.gather(1, beams).unsqueeze(-1)
    best_values, best = values.view(n_seq, -1).topk(n, dim=-1)
    ids = (beams.unsqueeze(-1) * vocab + words).view(n_seq, -1).gather(1, best)
    return best_values, ids


@torch.no_grad()
def beam_search(model, state, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
                beam_size: int, alpha: float = 1.0, n_best: int = 1, min_length: int = 0,
                no_repeat_ngram: int = 0, drop_multiple: int | None = None
                ) -> list[list[Hypothesis]]:
    """Batched beam search; all sentences x beams advance as one [B*K, V] tensor.

    Each step takes the 2K best continuations of each sentence; those ending in </s> that
    rank among the top K are finished (scored with the GNMT length penalty ``alpha``), the
    best K others stay alive. A sentence is done once it has ``n_best`` finished hypotheses
    that no alive one can beat (asking for more makes the search go on longer), or at its
    length budget; beam_size 1 reproduces greedy search.

    Args:
        state, first_tokens [B], max_lengths [B], drop_multiple: as for :func:`greedy_search`
        (finished sentences leave the batch, with their K rows, ``drop_multiple`` at a time).
    Returns:
        per sequence (input order), its ``n_best`` hypotheses, best first.
    """
    batch, k = first_tokens.size(0), beam_size
    device = first_tokens.device
    multiple = drop_multiple or default_drop_multiple(device)
    state = state.select(torch.arange(batch, device=device).repeat_interleave(k))
    max_lengths = max_lengths.to(device)
    active = torch.arange(batch, device=device)  # original sentence of each batch sentence
    running = torch.ones(batch, dtype=torch.bool, device=device)  # False: finished filler
    scores = torch.full((batch, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive to avoid duplicates
    history = torch.empty((batch * k, 0), dtype=torch.long, device=device)
    token = first_tokens.repeat_interleave(k)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    nth_best = torch.full((batch,), NEG_INF, device=device)  # n_best-th best finished score
    for step in range(int(max_lengths.max())):
        n_active = active.numel()
        log_probs, state, _ = model.decode_step(token, state)
        _restrict_length(log_probs, step, max_lengths[active].repeat_interleave(k), min_length)
        block_repeated_ngrams(log_probs, history, no_repeat_ngram)
        vocab = log_probs.size(-1)
        cand_scores, cand_ids = best_continuations(log_probs, scores, min(2 * k, k * vocab))
        cand_beams = torch.div(cand_ids, vocab, rounding_mode="floor")
        cand_tokens = cand_ids % vocab
        is_eos = (cand_tokens == EOS_ID) & torch.isfinite(cand_scores)

        # Finish the </s> candidates that rank among the top K of their sentence.
        finishing = is_eos & running.unsqueeze(1)
        finishing[:, k:] = False
        if bool(finishing.any()):
            norm = length_penalty(step + 1, alpha)
            for a, c in finishing.nonzero().tolist():
                row = a * k + int(cand_beams[a, c])
                lp = float(cand_scores[a, c])
                finished[int(active[a])].append(
                    Hypothesis(history[row].tolist(), lp / norm, lp))
            for a in finishing.any(dim=1).nonzero(as_tuple=True)[0].tolist():
                hyps = finished[int(active[a])]
                hyps.sort(key=lambda h: h.score, reverse=True)
                del hyps[k:]  # only the K best finished can ever be returned
                if len(hyps) >= n_best:
                    nth_best[active[a]] = hyps[n_best - 1].score

        # A sentence is done when no alive hypothesis can still enter the n_best finished
        # ones it returns: alive log-probs only fall, so with alpha = 0 this test is exact;
        # with alpha > 0 it assumes the hypothesis would end now (the usual heuristic).
        best_alive = cand_scores.masked_fill(is_eos, NEG_INF).max(dim=1).values
        bound = best_alive / length_penalty(step + 2, alpha)
        done = (bound <= nth_best[active]) | (max_lengths[active] <= step + 1)

        # The best K candidates that do not end in </s> stay alive.
        order = is_eos.long() * (2 * k) + torch.arange(cand_ids.size(1), device=device)
        alive = order.topk(k, dim=1, largest=False).indices  # [A, K]
        scores = cand_scores.gather(1, alive)
        scores = scores.masked_fill(is_eos.gather(1, alive), NEG_INF)
        rows = (torch.arange(n_active, device=device).unsqueeze(1) * k
                + cand_beams.gather(1, alive)).view(-1)
        token = cand_tokens.gather(1, alive).view(-1)
        history = torch.cat([history[rows], token.unsqueeze(1)], dim=1)

        running = running & ~done
        if not bool(running.any()):
            break
        keep = _sequences_to_keep(running, multiple)
        if keep is None:  # rows move only among the beams of their own sentence
            state = state.reorder_beams(rows)
        else:  # drop finished sentences from the batch
            rows = (rows.view(n_active, k)[keep]).view(-1)
            beam_rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            history, token = history[beam_rows], token[beam_rows]
            scores, active, running = scores[keep], active[keep], running[keep]
            state = state.select(rows)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


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


@torch.no_grad()
def sample(model, state, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, min_length: int = 0,
           on_step=None) -> list[Hypothesis]:
    """Draw each token from the model's distribution (scaled by ``temperature``, filtered by
    top-k and top-p). ``top_k=1`` is greedy search. A seeded ``generator`` makes the draw
    reproducible.

    ``on_step(rows, tokens)``, if given, is called after every step with the original row
    indices still running and the token each drew, so text can be streamed as it comes.
    Returns one Hypothesis per sequence (log_prob under the unfiltered model).
    """
    def draw(log_probs: torch.Tensor, history: torch.Tensor,
             lengths: torch.Tensor) -> torch.Tensor:
        logits = filter_logits(log_probs / temperature, top_k, top_p)
        if top_k == 1:
            return logits.argmax(-1)  # exact greedy, no draw
        probs = logits.softmax(-1)
        return torch.multinomial(probs.cpu() if generator is not None else probs, 1,
                                 generator=generator).view(-1).to(log_probs.device)

    return _search_one_group(model, state, first_tokens, max_lengths, min_length, draw, on_step)
