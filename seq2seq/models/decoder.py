"""The recurrent decoder of the translator, with optional attention and input feeding."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention
from .encoder import RNN_CLASSES
from .functional import Dropout, dropout

_CELL_STEPS = {"gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


@dataclass
class DecoderState:
    """Everything a decoder step needs; all tensors have the batch (or batch*beam) first.

    hidden/cell: [layers, B, H] (cell only for LSTM); feed: [B, H] the previous attentional
    vector (input feeding) or None; memory: [B, S, Dm] encoder states; keys: [B, S, K] their
    attention projection; mask: [B, S] True at real source tokens.
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None = None
    feed: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    _SOURCE_SIDE = ("memory", "keys", "mask")  # per source sentence, shared by its beams

    def select(self, index: torch.Tensor) -> DecoderState:
        """Reorder/replicate the batch: row i of the result is row index[i] (beam search)."""
        return self._pick(index, [f.name for f in fields(self)])

    def reorder_beams(self, index: torch.Tensor) -> DecoderState:
        """``select`` for an index that moves rows only among the beams of their own source
        sentence. The source side (memory, keys, mask) is the same for all of a sentence's
        beams, so it is kept instead of copied: the largest tensors, at every search step."""
        return self._pick(index, [f.name for f in fields(self)
                                  if f.name not in self._SOURCE_SIDE])

    def append(self, other: DecoderState) -> DecoderState:
        """This state's rows, then ``other``'s: sequences joining a search under way. The
        source side is padded to the longer of the two sources (padding is masked out)."""
        source = max(self.mask.size(1), other.mask.size(1)) if self.mask is not None else 0
        joined = {}
        for name in [f.name for f in fields(self)]:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is None:
                continue
            if name in ("hidden", "cell"):
                joined[name] = torch.cat([mine, theirs], dim=1)
            elif name in self._SOURCE_SIDE:
                joined[name] = torch.cat([_pad_source(mine, source), _pad_source(theirs, source)])
            else:
                joined[name] = torch.cat([mine, theirs])
        return replace(self, **joined)

    def _pick(self, index: torch.Tensor, names: list[str]) -> DecoderState:
        picked = {}
        for name in names:
            value = getattr(self, name)
            if value is not None:
                picked[name] = value.index_select(1 if name in ("hidden", "cell") else 0, index)
        return replace(self, **picked)


def _pad_source(x: torch.Tensor, length: int) -> torch.Tensor:
    """[B, S, ...] -> [B, length, ...], zeros (False for a mask) after position S."""
    missing = length - x.size(1)
    if missing == 0:
        return x
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, missing))


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
        self.combine = (nn.Linear(hidden_size + memory_size, hidden_size)
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
            outputs, weights = self.readout(rnn_out, state)
            return outputs, replace(state, hidden=hidden, cell=cell), weights
        gates = self.input_gates(embedded)  # one matmul for the embedding part of every step
        feed_weight = self.feed_weight()  # sliced and made contiguous once, not per step
        outputs, all_weights = [], []
        # unbind, not gates[:, t]: the backward of T slices would build T zero-filled
        # [B, T, G*H] gradients and sum them; unbind's backward stacks the T slices once.
        for gates_t in gates.unbind(1):
            output, state, weights = self.step_from_gates(gates_t, state, feed_weight)
            outputs.append(output)
            all_weights.append(weights)
        attention = torch.stack(all_weights, 1) if return_attention else None
        return torch.stack(outputs, 1), state, attention

    def input_gates(self, embedded: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the first layer's input gates: [..., E] -> [..., G*H]."""
        weight = self.rnn.weight_ih_l0[:, : self.embedding_size]
        return F.linear(embedded, weight, self.rnn.bias_ih_l0)

    def feed_weight(self) -> torch.Tensor:
        """The first layer's input weights for the fed-back vector: [G*H, H] (or [G*H, 0])."""
        return self.rnn.weight_ih_l0[:, self.embedding_size:].contiguous()

    def step_from_gates(self, gates: torch.Tensor, state: DecoderState,
                        feed_weight: torch.Tensor
                        ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One step whose embedding share of the first layer's input gates, [B, G*H], was
        computed beforehand (``input_gates``, for all steps at once); ``feed_weight`` from
        ``feed_weight()``. It is passed where the cell expects its input bias (a [B, G*H]
        bias is allowed), so only the fed-back vector is multiplied here."""
        x = state.feed if self.feeds else gates.new_zeros(gates.size(0), 0)
        return self._step(x, feed_weight, gates, state)

    # ---- one step (search, scheduled sampling) ----

    def step(self, embedded: torch.Tensor, state: DecoderState
             ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """[B, E] one embedded input -> output [B, H], new state, weights [B, S] (or None).

        The first layer takes [embedded; fed-back vector] against its whole input weight, not
        the precomputed-gates split of the teacher-forced loop: the whole weight is a leaf
        tensor, so under autocast its low-precision copy is made once and cached, where a
        slice of it would be cast again at every step of a search.
        """
        x = torch.cat([embedded, state.feed], dim=-1) if self.feeds else embedded
        return self._step(x, self.rnn.weight_ih_l0, self.rnn.bias_ih_l0, state)

    # ---- shared by both ----

    def _step(self, x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor,
              state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """The first layer's input x with its weight and bias -> output, new state, weights."""
        hidden, cell = self._rnn_step(x, w_ih, b_ih, state)
        output, weights = self.readout(hidden[-1].unsqueeze(1), state)
        output = output.squeeze(1)
        new_state = replace(state, hidden=hidden, cell=cell,
                            feed=output if self.feeds else None)
        return output, new_state, None if weights is None else weights.squeeze(1)

    def _rnn_step(self, x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor,
                  state: DecoderState) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Advance every layer by one step with ATen's fused cell functions; the first layer
        with the given input weight and bias, the others with their own."""
        rnn = self.rnn
        new_h, new_c = [], []
        for layer in range(self.layers):
            if layer > 0:
                x = dropout(x, self.between_layers_dropout, self.training)
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                b_ih = getattr(rnn, f"bias_ih_l{layer}")
            w_hh = getattr(rnn, f"weight_hh_l{layer}")
            b_hh = getattr(rnn, f"bias_hh_l{layer}")
            if self.cell == "lstm":
                h, c = torch.lstm_cell(x, (state.hidden[layer], state.cell[layer]),
                                       w_ih, w_hh, b_ih, b_hh)
                new_c.append(c)
            else:
                h = _CELL_STEPS[self.cell](x, state.hidden[layer], w_ih, w_hh, b_ih, b_hh)
            new_h.append(h)
            x = h
        return torch.stack(new_h), (torch.stack(new_c) if new_c else None)

    def readout(self, rnn_out: torch.Tensor, state: DecoderState
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T, H] top-layer states -> output features [B, T, H] (+ weights [B, T, S])."""
        if self.attention is None:
            return self.output_dropout(rnn_out), None
        context, weights = self.attention(rnn_out, state.keys, state.memory, state.mask)
        output = self.combine(self.output_dropout(torch.cat([rnn_out, context], dim=-1)))
        return (torch.tanh(output) if self.squash_output else output), weights
