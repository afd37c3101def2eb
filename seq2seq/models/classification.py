"""The many-to-one head: embeddings, the shared recurrent encoder, pooling over time, classifier.

Pooling turns the encoder's states into one vector per text:

- ``last``: the final hidden state of the top layer, both directions side by side (the
  forward direction read the whole text left to right, the backward one right to left);
- ``mean`` / ``max``: the average / element-wise maximum of the top layer's outputs over the
  text's real positions;
- ``attention``: a learned weighted average, ``softmax_t(v . tanh(W o_t))`` over the real
  positions (Yang et al. 2016; one head of Lin et al. 2017).

Padded positions never reach the result: the encoder skips them (packed sequences) and every
pooling masks them, so a text gets the same scores however much padding its batch needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from ..config import ModelConfig
from ..errors import UserError
from ..tokenizers import PAD_ID
from .encoder import RecurrentEncoder, RNNState
from .functional import Dropout, init_weights


class AttentionPooling(nn.Module):
    """[B, S, D] states and a [B, S] mask -> [B, D] weighted average (and [B, S] weights)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def forward(self, outputs: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.project(outputs))).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), outputs).squeeze(1), weights


class ClassificationModel(nn.Module):
    """Token ids -> embeddings -> RecurrentEncoder -> pooling -> dropout -> linear / MLP -> logits."""

    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        enc, head = config.encoder, config.classifier
        self.pooling = head.pooling
        self.num_classes = num_classes
        self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=PAD_ID)
        self.embedding_dropout = Dropout(config.embedding_dropout)
        self.encoder = RecurrentEncoder(enc.cell, config.embedding_size, enc.hidden_size,
                                        enc.layers, enc.bidirectional, enc.dropout)
        size = self.encoder.output_size
        self.attention = AttentionPooling(size) if head.pooling == "attention" else None
        self.dropout = Dropout(head.dropout)
        if head.hidden_size > 0:
            self.classifier = nn.Sequential(nn.Linear(size, head.hidden_size), nn.ReLU(),
                                            Dropout(head.dropout),
                                            nn.Linear(head.hidden_size, num_classes))
        else:
            self.classifier = nn.Sequential(nn.Linear(size, num_classes))
        init_weights(self, ("encoder.rnn",), [self.embedding])
        # pretrained vectors kept fixed: words unseen in training stay comparable to seen ones
        self.embedding.weight.requires_grad_(not config.freeze_embeddings)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, S] ids (padded with PAD_ID) and [B] lengths (>= 1, CPU) -> [B, C] logits."""
        return self.classifier(self.dropout(self.encode(ids, lengths)))

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, S] ids and [B] lengths -> [B, D] pooled text vectors (D = dirs * hidden)."""
        embedded = self.embedding_dropout(self.embedding(ids))
        outputs, final = self.encoder(embedded, lengths)
        mask = (torch.arange(ids.size(1), device=ids.device)[None, :]
                < lengths.to(ids.device)[:, None])
        return self.pool(outputs, final, mask)

    def pool(self, outputs: torch.Tensor, final: RNNState, mask: torch.Tensor) -> torch.Tensor:
        """outputs [B, S, D] (zero at padding), the final state and mask [B, S] -> [B, D]."""
        if self.pooling == "last":
            h = final[0] if isinstance(final, tuple) else final
            return self.encoder.merge_directions(h)[-1]
        keep = mask.unsqueeze(-1)
        if self.pooling == "mean":
            total = outputs.masked_fill(~keep, 0.0).sum(1)
            return total / mask.sum(1, keepdim=True).to(outputs.dtype)
        if self.pooling == "max":
            return outputs.masked_fill(~keep, float("-inf")).max(1).values
        assert self.attention is not None  # pooling == "attention"
        pooled, _ = self.attention(outputs, mask)
        return pooled


def classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                        class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
                        ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """[B, C] logits and [B] class indices -> (loss sum, NLL sum, number of texts).

    With ``class_weights`` [C] the loss is sum_i w[y_i] * CE_i: divided by the text count, its
    expectation over the training set is unchanged for "balanced" weights (mean weight 1),
    while each rare-class text counts more. The NLL for reporting is unweighted.
    """
    logits = logits.float()
    loss = F.cross_entropy(logits, labels, weight=class_weights, reduction="sum",
                           label_smoothing=label_smoothing)
    nll = F.cross_entropy(logits.detach(), labels, reduction="sum")
    return loss, nll, int(labels.numel())


# --------------------------------------------------------------------------------------
# Transfer from a language model or another classifier


def copy_encoder_weights(model: ClassificationModel, weights: Path) -> tuple[int, int]:
    """Copy ``embedding.*`` and ``encoder.rnn.*`` tensors from a language model's or a
    classifier's safetensors; the classifier's own output layers stay freshly initialised.

    A language model reads left to right, so its encoder has only the forward direction: for
    a bidirectional classifier the forward tensors are copied and the backward ones keep their
    fresh initialisation; so do deeper layers whose input size differs (a layer above a
    bidirectional one reads both directions). From a bidirectional classifier every direction
    is copied. The embedding and every forward first-layer tensor must fit, else it is a
    UserError. Returns (tensors copied, tensors that could be).
    """
    own = model.state_dict()
    wanted = [name for name in own if name.startswith(("embedding.", "encoder.rnn."))]
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            stored = set(handle.keys())
            # safetensors stores tied tensors once and records the dropped names in metadata.
            aliases = {k: v for k, v in (handle.metadata() or {}).items() if v in stored}
            found = {}
            for name in wanted:
                key = name if name in stored else aliases.get(name)
                if key is not None:
                    found[name] = handle.get_tensor(key)
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"{weights}: not a readable safetensors file ({err})") from None
    required = ["embedding.weight"] + [n for n in wanted if n.startswith("encoder.rnn.")
                                       and n.endswith("_l0")]
    for name in required:
        if name not in found:
            raise UserError(f"model.init_from: {weights} has no tensor {name}; is it a seq2seq "
                            "language model or classifier?")
        if found[name].shape != own[name].shape:
            raise UserError(
                f"model.init_from: {name} is {tuple(found[name].shape)} in {weights} but "
                f"{tuple(own[name].shape)} here; model.embedding_size, model.encoder.cell and "
                "model.encoder.hidden_size must match the source run's")
    copied = {name: value for name, value in found.items() if value.shape == own[name].shape}
    with torch.no_grad():
        for name, value in copied.items():
            own[name].copy_(value)
    return len(copied), len(wanted)
