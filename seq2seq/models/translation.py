"""The many-to-many head: an encoder-decoder translator built from the shared parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..tokenizers import PAD_ID
from .attention import build_attention
from .decoder import DecoderState, RecurrentDecoder, SourceMemory
from .encoder import RecurrentEncoder
from .functional import Dropout, Linear, init_weights, step_linear


class Bridge(nn.Module):
    """Encoder final state [L_enc, B, D_enc] -> decoder initial state [L_dec, B, H].

    With ``learned`` it is tanh(W h) per layer (the top encoder layer feeds every decoder
    layer when the layer counts differ); otherwise the state passes through unchanged.
    """

    def __init__(self, encoder_size: int, decoder_size: int, decoder_layers: int,
                 decoder_cell: str, learned: bool) -> None:
        super().__init__()
        self.decoder_layers = decoder_layers
        self.learned = learned
        self.needs_cell = decoder_cell == "lstm"
        self.hidden_map = Linear(encoder_size, decoder_size) if learned else None
        self.cell_map = Linear(encoder_size, decoder_size) if learned and self.needs_cell else None

    def forward(self, h: torch.Tensor, c: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.learned:  # config validation guarantees equal shapes and cells
            return h.contiguous(), (c.contiguous() if c is not None else None)
        if h.size(0) != self.decoder_layers:
            h = h[-1:].expand(self.decoder_layers, -1, -1)
            c = c[-1:].expand(self.decoder_layers, -1, -1) if c is not None else None
        assert self.hidden_map is not None  # learned
        hidden = torch.tanh(self.hidden_map(h))
        cell = None
        if self.needs_cell:
            assert self.cell_map is not None  # learned and needs_cell
            cell = torch.tanh(self.cell_map(c if c is not None else h))
        return hidden.contiguous(), cell.contiguous() if cell is not None else None


class TranslationModel(nn.Module):
    """Source ids -> encoder -> bridge -> attentive decoder -> target vocabulary scores."""

    def __init__(self, config: ModelConfig, src_vocab_size: int, trg_vocab_size: int) -> None:
        super().__init__()
        enc, dec = config.encoder, config.decoder
        self.src_embed = nn.Embedding(src_vocab_size, config.embedding_size, padding_idx=PAD_ID)
        self.trg_embed = (self.src_embed if config.share_embeddings else
                          nn.Embedding(trg_vocab_size, config.embedding_size, padding_idx=PAD_ID))
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.encoder = RecurrentEncoder(enc.cell, config.embedding_size, enc.hidden_size,
                                        enc.layers, enc.bidirectional, enc.dropout)
        memory_size = self.encoder.output_size
        attention = build_attention(dec.attention, dec.luong_score, dec.hidden_size, memory_size)
        self.bridge = Bridge(memory_size, dec.hidden_size, dec.layers, dec.cell, dec.bridge)
        self.decoder = RecurrentDecoder(dec.cell, config.embedding_size, dec.hidden_size,
                                        dec.layers, memory_size, attention, dec.input_feeding,
                                        dec.dropout, config.output_dropout,
                                        squash_output=dec.attentional_output == "tanh")
        self.output_layer = Linear(dec.hidden_size, trg_vocab_size)
        init_weights(self, ("encoder.rnn", "decoder.rnn"), [self.src_embed, self.trg_embed])
        if config.tie_embeddings:
            self.output_layer.weight = self.trg_embed.weight

    # ---- encoding ----

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        """[B, S] source ids (ending in </s>) and [B] lengths -> the decoder's initial state."""
        embedded = self.embedding_dropout(self.src_embed(src))
        memory, final = self.encoder(embedded, src_lengths)
        h, c = (final, None) if self.encoder.cell != "lstm" else final
        h = self.encoder.merge_directions(h)
        c = self.encoder.merge_directions(c) if c is not None else None
        hidden, cell = self.bridge(h, c)
        decoder = self.decoder
        if decoder.attention is None:
            return DecoderState(hidden=hidden, cell=cell)
        mask = (torch.arange(src.size(1), device=src.device)[None, :]
                < src_lengths.to(src.device)[:, None])
        feed = memory.new_zeros(src.size(0), decoder.hidden_size) if decoder.feeds else None
        source = SourceMemory(memory, decoder.attention.project_memory(memory), mask)
        return DecoderState(hidden=hidden, cell=cell, feed=feed, source=source)

    # ---- training ----

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, trg_input: torch.Tensor,
                teacher_forcing: float = 1.0, return_attention: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder output features for every target position.

        Args:
            src: [B, S] source ids; src_lengths: [B].
            trg_input: [B, T] decoder inputs (<s> y_1 ... y_{T-1}).
            teacher_forcing: probability, per sentence and step, of feeding the gold token
                rather than the model's own previous prediction (scheduled sampling).
        Returns:
            features [B, T, H] for ``logits``; attention [B, T, S] if asked.
        """
        state = self.encode(src, src_lengths)
        if teacher_forcing >= 1.0:
            embedded = self.embedding_dropout(self.trg_embed(trg_input))
            features, _, attention = self.decoder(embedded, state, return_attention)
            return features, attention
        return self._forward_sampled(trg_input, state, teacher_forcing), None

    def _forward_sampled(self, trg_input: torch.Tensor, state: DecoderState,
                         teacher_forcing: float) -> torch.Tensor:
        """Step by step, feeding the model's own greedy prediction with prob. 1 - teacher_forcing."""
        outputs: list[torch.Tensor] = []
        token = trg_input[:, 0]
        for t in range(trg_input.size(1)):
            if t > 0:
                with torch.no_grad():
                    predicted = self.output_layer(outputs[-1]).argmax(-1)
                use_gold = torch.rand(token.shape, device=token.device) < teacher_forcing
                token = torch.where(use_gold, trg_input[:, t], predicted)
            embedded = self.embedding_dropout(self.trg_embed(token))
            output, state, _ = self.decoder.step(embedded, state)
            outputs.append(output)
        return torch.stack(outputs, 1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[..., H] output features -> [..., V] unnormalised target scores."""
        return self.output_layer(features)

    # ---- search ----

    def decode_step(self, tokens: torch.Tensor, state: DecoderState
                    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """[N] previous tokens -> log-probabilities [N, V], new state, attention [N, S]."""
        output, state, weights = self.decoder.step(self.trg_embed(tokens), state)
        logits = step_linear(output, self.output_layer.weight, self.output_layer.bias)
        return F.log_softmax(logits.float(), dim=-1), state, weights
