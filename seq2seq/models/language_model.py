"""The one-to-many head: a recurrent language model, optionally conditioned on one input.

tokens -> embedding -> the shared RecurrentEncoder run left to right -> output layer -> the
next token's scores. A condition (a class label or a fixed feature vector) becomes a vector
c that gives the first hidden state (``condition_mode: init``), is appended to every step's
input (``input``), or both; so one input yields a whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..tokenizers import PAD_ID
from .encoder import RecurrentEncoder, RNNState
from .functional import Linear, dropout, init_weights, step_linear


@dataclass
class LMState:
    """The language model's recurrent state; the batch is dimension 1 of hidden/cell, 0 of condition.

    hidden/cell: [layers, B, H] (cell only for an LSTM); condition: [B, C] the condition
    vector appended to every step's input (``condition_mode`` input/both), else None.
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None = None
    condition: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> LMState:
        """Reorder/replicate the batch: row i of the result is row index[i] (beam search)."""
        moved = self.reorder_beams(index)
        if self.condition is not None:
            moved.condition = self.condition.index_select(0, index)
        return moved

    def reorder_beams(self, index: torch.Tensor) -> LMState:
        """``select`` for an index that moves rows only among one sequence's beams: the
        condition, the same for all of them, is kept as it is."""
        return LMState(
            hidden=self.hidden.index_select(1, index),
            cell=None if self.cell is None else self.cell.index_select(1, index),
            condition=self.condition)

    def detach(self) -> LMState:
        """The same values cut from the graph: truncated backprop stops at the window's start."""
        return LMState(self.hidden.detach(),
                       None if self.cell is None else self.cell.detach(),
                       None if self.condition is None else self.condition.detach())

    def rnn_state(self) -> RNNState:
        return self.hidden if self.cell is None else (self.hidden, self.cell)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout on [B, T, D]: one mask per sequence, shared by all its steps."""
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.size(0), 1, x.size(2), device=x.device, dtype=x.dtype) >= p
    return x * keep * (1.0 / (1.0 - p))


class ConditionEncoder(nn.Module):
    """A condition -> a vector [B, C]: a learned label embedding, or tanh(W features)."""

    def __init__(self, kind: str, inputs: int, size: int) -> None:
        super().__init__()
        self.kind = kind
        self.inputs = inputs  # number of labels, or the feature vector's length
        if kind == "label":
            self.embedding = nn.Embedding(inputs, size)
        else:
            self.projection = Linear(inputs, size)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """condition: [B] label ids (long) or [B, D] features (float) -> [B, C]."""
        if self.kind == "label":
            return self.embedding(condition)
        return torch.tanh(self.projection(condition.float()))


class LanguageModel(nn.Module):
    """Predicts each token from the ones before it (and the condition, if any)."""

    def __init__(self, config: ModelConfig, vocab_size: int, condition_inputs: int = 0) -> None:
        """``condition_inputs``: the number of labels or feature dimensions (0 = unconditioned)."""
        super().__init__()
        enc, lm = config.encoder, config.language_model
        self.cell = enc.cell
        self.layers = enc.layers
        self.hidden_size = enc.hidden_size
        self.locked = lm.locked_dropout
        self.embedding_dropout = config.embedding_dropout
        self.output_dropout = config.output_dropout
        self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=PAD_ID)
        self.condition = (ConditionEncoder(lm.condition_type, condition_inputs, lm.condition_size)
                          if condition_inputs else None)
        feeds = self.condition is not None and lm.condition_mode in ("input", "both")
        self.feeds_condition = feeds
        self.encoder = RecurrentEncoder(
            enc.cell, config.embedding_size + (lm.condition_size if feeds else 0),
            enc.hidden_size, enc.layers, bidirectional=False, dropout=enc.dropout)
        # init mode: one learned map from c to every layer's h (and c for an LSTM).
        state_parts = 2 if enc.cell == "lstm" else 1
        self.initial_state_map = (
            Linear(lm.condition_size, enc.layers * state_parts * enc.hidden_size)
            if self.condition is not None and lm.condition_mode in ("init", "both") else None)
        self.output_layer = Linear(enc.hidden_size, vocab_size)
        init_weights(self, ("encoder.rnn",), [self.embedding])
        if config.tie_embeddings:  # config validation guarantees embedding_size == hidden_size
            self.output_layer.weight = self.embedding.weight
        # pretrained vectors kept fixed: words unseen in training stay comparable to seen ones
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)

    # ---- state ----

    def initial_state(self, batch: int, condition: torch.Tensor | None = None,
                      device: torch.device | str | None = None) -> LMState:
        """The state before the first token: from the condition ([B] labels or [B, D]
        features), or zeros."""
        device = device if device is not None else self.output_layer.weight.device
        if (condition is None) != (self.condition is None):
            raise ValueError("a conditioned model needs a condition, an unconditioned one none")
        shape = (self.layers, batch, self.hidden_size)
        if self.condition is None:
            zeros = torch.zeros(shape, device=device)
            return LMState(zeros, zeros.clone() if self.cell == "lstm" else None)
        assert condition is not None  # checked above
        vector = self.condition(condition.to(device))
        fed = vector if self.feeds_condition else None
        if self.initial_state_map is None:
            zeros = torch.zeros(shape, device=device, dtype=vector.dtype)
            return LMState(zeros, zeros.clone() if self.cell == "lstm" else None, fed)
        parts = torch.tanh(self.initial_state_map(vector))  # [B, layers * parts * H]
        parts = parts.view(batch, self.layers, -1, self.hidden_size).permute(2, 1, 0, 3)
        cell = parts[1].contiguous() if self.cell == "lstm" else None
        return LMState(parts[0].contiguous(), cell, fed)

    # ---- training and scoring ----

    def forward(self, tokens: torch.Tensor, state: LMState | None = None,
                condition: torch.Tensor | None = None) -> tuple[torch.Tensor, LMState]:
        """Output features for every position.

        Args:
            tokens: [B, T] input ids (the previous token at each position).
            state: carried over from the previous window (stream mode), or None to start
                from ``initial_state(condition)``.
            condition: [B] label ids or [B, D] features (conditioned models, with state None).
        Returns:
            features [B, T, H] for ``logits``, and the state after the last position.
        """
        if state is None:
            state = self.initial_state(tokens.size(0), condition, tokens.device)
        embedded = self._dropout(self.embedding(tokens), self.embedding_dropout)
        if state.condition is not None:
            steps = state.condition.unsqueeze(1).expand(-1, tokens.size(1), -1)
            embedded = torch.cat([embedded, steps.to(embedded.dtype)], dim=-1)
        outputs, final = self.encoder(embedded, None, state.rnn_state())
        hidden, cell = (final, None) if self.cell != "lstm" else final
        features = self._dropout(outputs, self.output_dropout)
        return features, replace(state, hidden=hidden, cell=cell)

    def _dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if self.locked:
            return locked_dropout(x, p, self.training)
        return dropout(x, p, self.training)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[..., H] output features -> [..., V] unnormalised next-token scores."""
        return self.output_layer(features)

    # ---- search ----

    def decode_step(self, tokens: torch.Tensor, state: LMState
                    ) -> tuple[torch.Tensor, LMState, None]:
        """[N] previous tokens -> log-probabilities [N, V] of the next, the new state, None."""
        features, state = self(tokens.unsqueeze(1), state)
        logits = step_linear(features[:, 0], self.output_layer.weight,
                             self.output_layer.bias)
        return F.log_softmax(logits.float(), dim=-1), state, None
