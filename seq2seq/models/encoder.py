"""The recurrent encoder shared by all three heads (translation, classification, language model)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

RNN_CLASSES: dict[str, type[nn.RNN] | type[nn.GRU] | type[nn.LSTM]] = {
    "rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

# A recurrent state: h [layers*dirs, B, H], or (h, c) for an LSTM.
RNNState = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RecurrentEncoder(nn.Module):
    """Embedded tokens -> contextual states, the whole sequence in one fused RNN call.

    Padded positions are skipped with packed sequences, so the final state of each sentence
    is taken at its true last token and padding never leaks into the backward direction.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.cell = cell
        self.layers = layers
        self.directions = 2 if bidirectional else 1
        self.hidden_size = hidden_size
        self.output_size = hidden_size * self.directions
        self.rnn = RNN_CLASSES[cell](
            input_size, hidden_size, num_layers=layers, batch_first=True,
            bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0,
        )

    def forward(self, embedded: torch.Tensor, lengths: torch.Tensor | None = None,
                state: RNNState | None = None) -> tuple[torch.Tensor, RNNState]:
        """Run the RNN.

        Args:
            embedded: [B, S, E] input vectors.
            lengths: [B] true lengths (>= 1), or None when no row is padded.
            state: optional initial state (e.g. carried over by a language model).
        Returns:
            outputs [B, S, dirs*H] (zeros at padded positions) and the final state
            (h [layers*dirs, B, H], plus c for an LSTM).
        """
        if lengths is None:
            return self.rnn(embedded, state)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        outputs, final = self.rnn(packed, state)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True,
                                         total_length=embedded.size(1))
        return outputs, final

    def merge_directions(self, h: torch.Tensor) -> torch.Tensor:
        """[layers*dirs, B, H] -> [layers, B, dirs*H]: both directions of a layer side by side."""
        layers_dirs, batch, hidden = h.shape
        h = h.view(self.layers, self.directions, batch, hidden)
        return h.transpose(1, 2).reshape(self.layers, batch, self.directions * hidden)
