"""Attention over encoder states: Bahdanau (additive) and Luong (dot, general, concat).

Every variant splits its work in two so the decoder loop does as little as possible:
``project_memory`` runs once per batch on the encoder states, ``forward`` runs for one
decoder step (T = 1) or for all steps at once (T = target length) as batched products.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .functional import Linear, step_linear, tanh_


class Attention(nn.Module):
    """Interface: keys = project_memory(memory); context, weights = forward(query, keys, memory, mask)."""

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """[B, S, Dm] encoder states -> [B, S, K] keys, computed once per batch."""
        raise NotImplementedError

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """[B, T, Dq] queries x [B, S, K] keys -> [B, T, S] unnormalised scores."""
        raise NotImplementedError

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            query: [B, T, Dq] decoder states.
            keys: [B, S, K] from ``project_memory``.
            memory: [B, S, Dm] encoder states (the values).
            mask: [B, S] bool, True at real source tokens; padded positions get weight 0.
        Returns:
            context [B, T, Dm] and weights [B, T, S] (rows sum to 1).
        """
        scores = self.scores(query, keys).masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory), weights


class AdditiveAttention(Attention):
    """score(q, m) = v . tanh(W_q q + W_m m) (Bahdanau et al., 2015; Luong's "concat")."""

    def __init__(self, query_size: int, memory_size: int, hidden_size: int) -> None:
        super().__init__()
        self.key_layer = Linear(memory_size, hidden_size, bias=False)
        self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
        self.energy_layer = nn.Linear(hidden_size, 1, bias=False)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_layer(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return additive_scores(step_linear(query, self.query_layer.weight), keys,
                               self.energy_layer.weight[0])


class _AdditiveScores(torch.autograd.Function):
    """v . tanh(q + k) over every (query, key) pair without keeping the [B, T, S, K] energies.

    Autograd would save the tanh output for the backward pass: B * S * K values per decoder
    step, by far the largest activation a Bahdanau decoder keeps (T * S * B * K in all, 265 MB
    in float32 for a 64 x 45 x 45 batch of 512-unit states). Recomputing it in the backward
    pass costs one add and one tanh and saves only q and k, which are small or shared.

    Both passes run in float32 even under autocast (the energies are never stored, so that
    costs no memory): the gradient for q sums S terms that nearly cancel, because softmax
    gradients sum to zero over the keys, and in bfloat16 that sum is mostly rounding error.
    """

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, keys: torch.Tensor, v: torch.Tensor
                ) -> torch.Tensor:
        ctx.save_for_backward(query, keys, v)
        with torch.autocast(query.device.type, enabled=False):
            energy = _energy(query, keys)
            return torch.matmul(energy, v.to(energy.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query, keys, v = ctx.saved_tensors
        with torch.autocast(query.device.type, enabled=False):
            energy = _energy(query, keys)
            grad = grad.to(energy.dtype)
            # d score / d (q + k) = v * (1 - tanh^2), times each score's gradient.
            grad_sum = torch.ops.aten.tanh_backward(grad.unsqueeze(-1) * v.to(energy.dtype),
                                                    energy)
            grad_v = torch.matmul(grad.reshape(1, -1), energy.reshape(-1, energy.size(-1)))
        return (grad_sum.sum(2).to(query.dtype), grad_sum.sum(1).to(keys.dtype),
                grad_v.reshape(-1).to(v.dtype))


def _energy(query: torch.Tensor, keys: torch.Tensor, training: bool = True) -> torch.Tensor:
    """[B, T, K] + [B, S, K] -> tanh of every pair's sum, [B, T, S, K], with
    ``functional.tanh_`` (2 sigmoid(2x) - 1 in float32 on CPU: beam search 7-14 % faster,
    a training step about 7 %; BENCHMARKS.md).

    ``training`` (a backward pass follows): in at least float32. Otherwise (search, scoring
    without gradients) in the inputs' dtype."""
    dtype = torch.promote_types(query.dtype, keys.dtype)
    if training:
        dtype = torch.promote_types(dtype, torch.float32)
    # In place on the fresh sum: one [B, T, S, K] buffer instead of two.
    return tanh_(query.to(dtype).unsqueeze(2) + keys.to(dtype).unsqueeze(1))


def additive_scores(query: torch.Tensor, keys: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, T, K] projected queries, [B, S, K] keys, [K] energy weights -> [B, T, S] float32
    scores v . tanh(q_t + k_s); the same values and gradients as the plain expression, in
    less memory. Without a backward pass to come (search), they are computed directly in the
    working dtype: the float32 guard is for the gradient, and under bfloat16 autocast it would
    cost beam search about a fifth of its speed."""
    if torch.is_grad_enabled() and (query.requires_grad or keys.requires_grad or v.requires_grad):
        return _AdditiveScores.apply(query, keys, v)  # type: ignore[no-untyped-call]
    return F.linear(_energy(query, keys, training=False), v.unsqueeze(0)).squeeze(-1)


class MultiplicativeAttention(Attention):
    """score(q, m) = q . m ("dot") or q . W m ("general") (Luong et al., 2015)."""

    def __init__(self, query_size: int, memory_size: int, general: bool) -> None:
        super().__init__()
        if not general and query_size != memory_size:
            raise ValueError(f"dot attention needs equal sizes, got {query_size} and {memory_size}")
        self.key_layer = Linear(memory_size, query_size, bias=False) if general else None

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.key_layer is None else self.key_layer(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, keys.transpose(1, 2))


def build_attention(kind: str, luong_score: str, query_size: int,
                    memory_size: int) -> Attention | None:
    """``kind``: none | bahdanau | luong; ``luong_score``: dot | general | concat."""
    if kind == "none":
        return None
    if kind == "bahdanau" or luong_score == "concat":
        return AdditiveAttention(query_size, memory_size, hidden_size=query_size)
    return MultiplicativeAttention(query_size, memory_size, general=luong_score == "general")
