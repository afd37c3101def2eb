"""Attention over encoder states: Bahdanau (additive) and Luong (dot, general, concat).

Every variant splits its work in two so the decoder loop does as little as possible:
``project_memory`` runs once per batch on the encoder states, ``forward`` runs for one
decoder step (T = 1) or for all steps at once (T = target length) as batched products.
"""

from __future__ import annotations

import torch
from torch import nn


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
        self.key_layer = nn.Linear(memory_size, hidden_size, bias=False)
        self.query_layer = nn.Linear(query_size, hidden_size, bias=False)
        self.energy_layer = nn.Linear(hidden_size, 1, bias=False)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_layer(memory)

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # [B, T, 1, K] + [B, 1, S, K] -> [B, T, S, K] -> [B, T, S]
        energy = torch.tanh(self.query_layer(query).unsqueeze(2) + keys.unsqueeze(1))
        return self.energy_layer(energy).squeeze(-1)


class MultiplicativeAttention(Attention):
    """score(q, m) = q . m ("dot") or q . W m ("general") (Luong et al., 2015)."""

    def __init__(self, query_size: int, memory_size: int, general: bool) -> None:
        super().__init__()
        if not general and query_size != memory_size:
            raise ValueError(f"dot attention needs equal sizes, got {query_size} and {memory_size}")
        self.key_layer = nn.Linear(memory_size, query_size, bias=False) if general else None

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
