"""The recurrent decoder of the translator, with optional attention and input feeding."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .attention import Attention
from .encoder import RNN_CLASSES
from .functional import Dropout, Linear, cell_step, dropout, linear, step_linear


@dataclass
class SourceMemory:
    """What the decoder attends to, one row per source sentence (or per beam of it).

    memory: [B, S, Dm] encoder states; keys: [B, S, K] their attention projection, computed
    once per source; mask: [B, S] True at real source tokens.
    """

    memory: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor

    def select(self, index: torch.Tensor) -> SourceMemory:
        """Row i of the result is row index[i]."""
        return SourceMemory(self.memory.index_select(0, index), self.keys.index_select(0, index),
                            self.mask.index_select(0, index))


@dataclass
class DecoderState:
    """Everything a decoder step needs, the batch (or batch x beam) in every tensor.

    hidden: [layers, B, H]; cell: [layers, B, H] for an LSTM, else None; feed: [B, H] the
    previous attentional vector with input feeding, else None; source: what attention reads
    (None without attention).
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None = None
    feed: torch.Tensor | None = None
    source: SourceMemory | None = None

    NAMES = ("hidden", "cell", "feed", "memory", "keys", "mask")  # the flat view's names

    def select(self, index: torch.Tensor) -> DecoderState:
        """Reorder/replicate the batch: row i of the result is row index[i] (beam search)."""
        return self._recurrent_rows(index, None if self.source is None
                                    else self.source.select(index))

    def reorder_beams(self, index: torch.Tensor) -> DecoderState:
        """``select`` for an index that moves rows only among the beams of their own source
        sentence: the source is the same for all of a sentence's beams, so it stays where it
        is instead of being copied (the largest tensors, at every search step)."""
        return self._recurrent_rows(index, self.source)

    def _recurrent_rows(self, index: torch.Tensor, source: SourceMemory | None) -> DecoderState:
        return DecoderState(self.hidden.index_select(1, index),
                            None if self.cell is None else self.cell.index_select(1, index),
                            None if self.feed is None else self.feed.index_select(0, index),
                            source)

    def named(self) -> dict[str, torch.Tensor]:
        """The tensors this state holds by name (of ``NAMES``): how an exported graph takes it."""
        found = {"hidden": self.hidden, "cell": self.cell, "feed": self.feed}
        if self.source is not None:
            found.update(memory=self.source.memory, keys=self.source.keys, mask=self.source.mask)
        return {name: tensor for name, tensor in found.items() if tensor is not None}

    @classmethod
    def from_named(cls, tensors: dict[str, torch.Tensor]) -> DecoderState:
        """The inverse of ``named``."""
        source = (SourceMemory(tensors["memory"], tensors["keys"], tensors["mask"])
                  if "memory" in tensors else None)
        return cls(tensors["hidden"], tensors.get("cell"), tensors.get("feed"), source)


@dataclass
class FirstLayerInput:
    """What the first layer's input gates are made of: x @ weight.T + added. ``added`` is the
    layer's input bias [G*H], or, when the embedding's share of the gates was computed for
    all steps at once, those gates [B, G*H] (bias included): the fused cell functions add a
    per-row "bias" as readily, so only the fed-back vector x is multiplied per step."""

    x: torch.Tensor
    weight: torch.Tensor
    added: torch.Tensor


class RecurrentDecoder(nn.Module):
    """Target embeddings + encoder states -> output features [B, T, H], one per target step.

    Per step: h_t = RNN([y_{t-1}; a_{t-1}], h_{t-1}) where a_{t-1} is fed back only with input
    feeding; with attention, c_t = attend(h_t, memory) and the attentional vector
    a_t = W [h_t; c_t] (tanh of it, as Luong's, when ``squash_output``) is the output, else the
    output is h_t. Without input feeding nothing depends on the previous output, so training
    runs the RNN as one fused call over all steps and attends for all steps in one batched
    product.
    """

    def __init__(self, cell: str, embedding_size: int, hidden_size: int, layers: int,
                 memory_size: int, attention: Attention | None, input_feeding: bool,
                 dropout: float, output_dropout: float, squash_output: bool = False) -> None:
        super().__init__()
        self.cell = cell
        self.layers = layers
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.output_size = hidden_size
        self.attention = attention
        self.feeds = attention is not None and input_feeding
        input_size = embedding_size + (hidden_size if self.feeds else 0)
        self.rnn = RNN_CLASSES[cell](input_size, hidden_size, num_layers=layers, batch_first=True,
                                     dropout=dropout if layers > 1 else 0.0)
        self.between_layers_dropout = dropout
        self.combine = (Linear(hidden_size + memory_size, hidden_size)
                        if attention is not None else None)
        self.output_dropout = Dropout(output_dropout)
        self.squash_output = squash_output

    # ---- whole sequence (training, scoring) ----

    def forward(self, embedded: torch.Tensor, state: DecoderState,
                return_attention: bool = False
                ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """Decode a whole gold target.

        Args:
            embedded: [B, T, E] embedded decoder inputs (<s> y_1 ... y_{T-1}).
            state: from the encoder and bridge.
        Returns:
            outputs [B, T, H], the final state, attention weights [B, T, S] (if asked, else None).
        """
        if not self.feeds:
            hx = state.hidden if self.cell != "lstm" else (state.hidden, state.cell)
            rnn_out, final = self.rnn(embedded, hx)
            hidden, cell = (final, None) if self.cell != "lstm" else final
            features, weights = self.readout(rnn_out, state)
            return features, replace(state, hidden=hidden, cell=cell), weights
        gates = self.input_gates(embedded)  # one matmul for the embedding part of every step
        feed_weight = self.feed_weight()  # sliced and made contiguous once, not per step
        outputs: list[torch.Tensor] = []
        all_weights: list[torch.Tensor] = []
        # unbind, not gates[:, t]: the backward of T slices would build T zero-filled
        # [B, T, G*H] gradients and sum them; unbind's backward stacks the T slices once.
        for gates_t in gates.unbind(1):
            output, state, weights = self.step_from_gates(gates_t, state, feed_weight)
            outputs.append(output)
            if weights is not None:
                all_weights.append(weights)
        attention = torch.stack(all_weights, 1) if return_attention else None
        return torch.stack(outputs, 1), state, attention

    def input_gates(self, embedded: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the first layer's input gates: [..., E] -> [..., G*H]."""
        weight = self._weight("weight_ih_l0")[:, : self.embedding_size].contiguous()
        return linear(embedded, weight, self._weight("bias_ih_l0"))

    def feed_weight(self) -> torch.Tensor:
        """The first layer's input weights for the fed-back vector: [G*H, H] (or [G*H, 0])."""
        return self._weight("weight_ih_l0")[:, self.embedding_size:].contiguous()

    def _weight(self, name: str) -> torch.Tensor:
        """One of the RNN's parameters by its PyTorch name (weight_ih_l0, bias_hh_l1, ...)."""
        weight: torch.Tensor = getattr(self.rnn, name)
        return weight

    def step_from_gates(self, gates: torch.Tensor, state: DecoderState,
                        feed_weight: torch.Tensor
                        ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step whose embedding share of the first layer's input gates, [B, G*H], was
        computed beforehand (``input_gates``, for all steps at once); ``feed_weight`` from
        ``feed_weight()``: only the fed-back vector is multiplied here."""
        x = state.feed if state.feed is not None else gates.new_zeros(gates.size(0), 0)
        return self._step(FirstLayerInput(x, feed_weight, added=gates), state)

    # ---- one step (search, scheduled sampling) ----

    def step(self, embedded: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """[B, E] one embedded input -> output [B, H], new state, weights [B, S] (or None).

        The first layer takes [embedded; fed-back vector] against its whole input weight, not
        the precomputed-gates split of the teacher-forced loop: the whole weight is a leaf
        tensor, so under autocast its low-precision copy is made once and cached, where a
        slice of it would be cast again at every step of a search.
        """
        x = torch.cat([embedded, state.feed], dim=-1) if state.feed is not None else embedded
        first = FirstLayerInput(x, self._weight("weight_ih_l0"), added=self._weight("bias_ih_l0"))
        return self._step(first, state)

    # ---- shared by both ----

    def _step(self, first: FirstLayerInput, state: DecoderState
              ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """The first layer's input -> output, new state, weights."""
        hidden, cell = self._rnn_step(first, state)
        output, weights = self.readout(hidden[-1].unsqueeze(1), state)
        output = output.squeeze(1)
        new_state = replace(state, hidden=hidden, cell=cell,
                            feed=output if self.feeds else None)
        return output, new_state, None if weights is None else weights.squeeze(1)

    def _rnn_step(self, first: FirstLayerInput, state: DecoderState
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Advance every layer by one step (``cell_step``), whose input gates are
        x @ w_ih.T + b_ih: the first layer's x, w_ih and b_ih (there: ``added``) as given, the
        other layers' their own."""
        x, w_ih, b_ih = first.x, first.weight, first.added
        new_h, new_c = [], []
        for layer in range(self.layers):
            if layer > 0:
                x = dropout(x, self.between_layers_dropout, self.training)
                w_ih, b_ih = self._weight(f"weight_ih_l{layer}"), self._weight(f"bias_ih_l{layer}")
            w_hh, b_hh = self._weight(f"weight_hh_l{layer}"), self._weight(f"bias_hh_l{layer}")
            c = state.cell[layer] if state.cell is not None else None
            h, c = cell_step(self.cell, x, state.hidden[layer], c, w_ih, w_hh, b_ih, b_hh)
            if c is not None:  # LSTM
                new_c.append(c)
            new_h.append(h)
            x = h
        return torch.stack(new_h), (torch.stack(new_c) if new_c else None)

    def readout(self, rnn_out: torch.Tensor, state: DecoderState
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T, H] top-layer states -> output features [B, T, H] (+ weights [B, T, S])."""
        if self.attention is None:
            return self.output_dropout(rnn_out), None
        assert self.combine is not None and state.source is not None  # with attention
        source = state.source
        context, weights = self.attention(rnn_out, source.keys, source.memory, source.mask)
        combined = self.output_dropout(torch.cat([rnn_out, context], dim=-1))
        output = step_linear(combined, self.combine.weight, self.combine.bias)
        return (torch.tanh(output) if self.squash_output else output), weights
