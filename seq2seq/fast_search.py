"""The searches of ``seq2seq.search`` with the same results, faster: the ones inference uses.

tests/test_search.py holds every search here equal to its plain reference; what each trick
buys on the reference model is in BENCHMARKS.md ("What the fast search buys").

- Finished sequences leave the batch (``rows_to_keep``), so the per-step work shrinks
  instead of carrying finished rows to the longest sequence's end. Under CPU bfloat16
  autocast they leave ``AUTOCAST_DROP_MULTIPLE`` at a time (finished ones ride along as
  filler), as every new row count compiles new oneDNN kernels.
- Beam search moves rows among one sentence's beams with ``state.reorder_beams`` (the
  encoded source, the largest tensors, stays where it is) while no sentence leaves.
- Each search is one ``packed_weights()`` scope: the step's products take weights packed
  for oneDNN at their first use (``step_linear``, ``cell_step``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .models.functional import packed_weights
from .search import (
    NEG_INF,
    Candidates,
    Hypothesis,
    Pick,
    block_repeated_ngrams,
    drawn,
    length_penalty,
    most_probable,
    pick_for_running,
    restrict_length,
)
from .tokenizers import EOS_ID

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


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= n."""
    return -(-n // multiple) * multiple


def rows_to_keep(running: torch.Tensor, multiple: int) -> torch.Tensor | None:
    """Indices of the sequences to carry on with: the running ones in order, then finished
    ones as filler until the count is a multiple of ``multiple``; None when that is all."""
    n_kept = round_up(int(running.sum()), multiple)
    if n_kept >= running.numel():
        return None
    return torch.argsort((~running).to(torch.uint8), stable=True)[:n_kept]


@torch.no_grad()
@packed_weights()
def one_path_search(model: Any, state: Any, first_tokens: torch.Tensor,
                    max_lengths: torch.Tensor, pick: Pick, min_length: int = 0,
                    on_step: Callable[[list[int], list[int]], None] | None = None,
                    drop_multiple: int | None = None) -> list[Hypothesis]:
    """``search.one_path_search``, with finished sequences leaving the batch
    ``drop_multiple`` at a time (default: ``default_drop_multiple``; results do not depend
    on it)."""
    batch, device = first_tokens.size(0), first_tokens.device
    multiple = drop_multiple or default_drop_multiple(device)
    sequence = torch.arange(batch, device=device)  # the input row each batch row holds
    limits = max_lengths.to(device)
    tokens = first_tokens
    history = torch.empty((batch, 0), dtype=torch.long, device=device)
    log_prob = torch.zeros(batch, device=device)
    running = torch.ones(batch, dtype=torch.bool, device=device)  # False: finished filler
    found: dict[int, Hypothesis] = {}
    for step in range(int(limits.max())):
        log_probs, state, _ = model.decode_step(tokens, state)
        restrict_length(log_probs, step, limits, min_length)
        tokens = pick_for_running(pick, log_probs, history, running)
        log_prob += log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)  # filler: ignored
        history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        if on_step is not None:
            rows = running.nonzero(as_tuple=True)[0]
            on_step(sequence[rows].tolist(), tokens[rows].tolist())
        done = running & (tokens == EOS_ID)
        if not bool(done.any()):
            continue
        for row in done.nonzero(as_tuple=True)[0].tolist():
            found[int(sequence[row])] = Hypothesis(history[row, :-1].tolist(),
                                                   float(log_prob[row]), float(log_prob[row]))
        running &= ~done
        if not bool(running.any()):
            break
        keep = rows_to_keep(running, multiple)
        if keep is not None:
            state = state.select(keep)
            sequence, limits, tokens = sequence[keep], limits[keep], tokens[keep]
            history, log_prob, running = history[keep], log_prob[keep], running[keep]
    return [found[i] for i in range(batch)]


def greedy_search(model: Any, state: Any, first_tokens: torch.Tensor,
                  max_lengths: torch.Tensor, min_length: int = 0, no_repeat_ngram: int = 0,
                  drop_multiple: int | None = None) -> list[Hypothesis]:
    """``search.greedy_search``, faster (see ``one_path_search``)."""
    return one_path_search(model, state, first_tokens, max_lengths,
                           most_probable(no_repeat_ngram), min_length,
                           drop_multiple=drop_multiple)


def sample(model: Any, state: Any, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, min_length: int = 0,
           on_step: Callable[[list[int], list[int]], None] | None = None,
           drop_multiple: int | None = None) -> list[Hypothesis]:
    """``search.sample``, faster (see ``one_path_search``): the same draws."""
    return one_path_search(model, state, first_tokens, max_lengths,
                           drawn(temperature, top_k, top_p, generator), min_length, on_step,
                           drop_multiple)


@torch.no_grad()
@packed_weights()
def beam_search(model: Any, state: Any, first_tokens: torch.Tensor, max_lengths: torch.Tensor,
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
        restrict_length(log_probs, step, max_lengths[active].repeat_interleave(k), min_length)
        block_repeated_ngrams(log_probs, history, no_repeat_ngram)
        cand = Candidates.best(scores, log_probs)

        # Finish the </s> candidates that rank among the top K of their sentence.
        finishing = cand.is_eos & running.unsqueeze(1)
        finishing[:, k:] = False
        if bool(finishing.any()):
            norm = length_penalty(step + 1, alpha)
            for a, c in finishing.nonzero().tolist():
                row = a * k + int(cand.beams[a, c])
                lp = float(cand.scores[a, c])
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
        best_alive = cand.scores.masked_fill(cand.is_eos, NEG_INF).max(dim=1).values
        bound = best_alive / length_penalty(step + 2, alpha)
        done = (bound <= nth_best[active]) | (max_lengths[active] <= step + 1)

        scores, rows, token = cand.alive(k)
        history = torch.cat([history[rows], token.unsqueeze(1)], dim=1)

        running = running & ~done
        if not bool(running.any()):
            break
        keep = rows_to_keep(running, multiple)
        if keep is None:  # rows move only among the beams of their own sentence
            state = state.reorder_beams(rows)
        else:  # drop finished sentences from the batch
            rows = (rows.view(n_active, k)[keep]).view(-1)
            beam_rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            history, token = history[beam_rows], token[beam_rows]
            scores, active, running = scores[keep], active[keep], running[keep]
            state = state.select(rows)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in finished]


