"""Functions every head's model shares.

``init_weights``: the one initialisation policy of the translator, classifier and language
model; ``pad_to_row_multiple``, which keeps matrix shapes few under autocast. Three hot-path
functions written for CPU speed, numerically identical in meaning to torch's:

- ``dropout``: draws its mask with ``torch.rand`` (about 3x faster on CPU than the
  Bernoulli sampler behind ``F.dropout``), from the same global generator, so runs stay
  reproducible and resumable.
- ``cross_entropy_sum``: summed, optionally label-smoothed cross-entropy whose backward pass
  is one sweep over the [N, V] scores (softmax minus target) instead of the four that
  log_softmax + nll_loss take.
- ``step_linear``: ``F.linear`` for the few rows of a search step: inside
  ``packed_weights()`` (every fast search) oneDNN's product with a packed weight (the
  output layer always, the others up to ``PACKED_MAX_ROWS`` rows), else with the weight on
  the left; ``cell_step``: one step of a recurrent cell, around those products where they
  are packed.
- ``linear`` (and the ``Linear`` layer): ``F.linear``, but inside ``onednn_products()``
  float32 CPU products run in oneDNN, forward and backward: on some CPUs (an AMD EPYC with
  AVX-512) 2.2-2.5x as fast as ATen's (MKL's) at the shapes of a training step. Where it pays
  is measured, not guessed (``seq2seq.precision.resolve_float32_products``).
- ``tanh_``: an in-place tanh that runs as 2 sigmoid(2x) - 1 on CPU in float32.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from ..tokenizers import PAD_ID


def init_weights(model: torch.nn.Module, rnn_prefixes: tuple[str, ...],
                 embeddings: Iterable[torch.nn.Embedding]) -> None:
    """Xavier-uniform for projections and embeddings, zero biases, zero padding rows.

    Parameters whose names start with ``rnn_prefixes`` keep PyTorch's uniform init, which
    trains these recurrent cells well.
    """
    for name, param in model.named_parameters():
        if name.startswith(rnn_prefixes):
            continue
        if param.dim() > 1:
            torch.nn.init.xavier_uniform_(param)
        else:
            torch.nn.init.zeros_(param)
    with torch.no_grad():
        for embedding in embeddings:
            embedding.weight[PAD_ID].zero_()


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by 1/(1-p)."""
    if not training or p == 0.0:
        return x
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))


class Dropout(torch.nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# Row counts that the output layer's matrix products are padded to under autocast.
AUTOCAST_ROW_MULTIPLE = 128


def pad_to_row_multiple(rows: torch.Tensor, multiple: int) -> torch.Tensor:
    """[N, H] -> [ceil(N / multiple) * multiple, H], the new rows zero.

    Why: under CPU bfloat16 autocast, oneDNN compiles a kernel per matrix shape and caches a
    few. The count of real target tokens differs in nearly every batch, so the output layer's
    three products (forward and two gradients) missed the cache at every step, and the freed
    kernels and their buffers fragmented the heap: on the reference model the process grew to
    2.1 GB in 600 steps. Padded to a multiple of 128 the shapes repeat, and it stays at 1.4 GB,
    a little faster (BENCHMARKS.md). On CUDA, multiples of 8 or more also suit tensor cores.
    """
    extra = -rows.size(0) % multiple
    return torch.nn.functional.pad(rows, (0, 0, 0, extra)) if extra else rows


class _CrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, smoothing: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        count = target.numel()
        # Padding rows (past ``count``) go through log_softmax too: slicing them off first
        # would make autograd allocate and copy a whole [N, V] gradient for the slice.
        log_probs = torch.log_softmax(logits, dim=-1)
        scored = log_probs[:count]
        picked = scored.gather(1, target.unsqueeze(1)).sum()
        loss = -(1.0 - smoothing) * picked
        if smoothing > 0:
            loss = loss - smoothing / logits.size(1) * scored.sum()
        ctx.save_for_backward(log_probs, target)
        ctx.smoothing = smoothing
        nll = -picked.detach()
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_nll: torch.Tensor
                 ) -> tuple[torch.Tensor, None, None]:
        log_probs, target = ctx.saved_tensors
        smoothing, count = ctx.smoothing, target.numel()
        # d loss / d logits = g * (softmax - target distribution); computed in place.
        scores = log_probs.exp_().mul_(grad)
        scores[count:] = 0
        rows = torch.arange(count, device=target.device)
        scores[rows, target] -= (1.0 - smoothing) * grad
        if smoothing > 0:
            scores[:count] -= smoothing / scores.size(1) * grad
        return scores, None, None


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, V] float scores, [n] targets (n <= N) -> (loss, nll).

    ``loss`` has the value and gradient of ``F.cross_entropy(logits[:n], target,
    reduction="sum", label_smoothing=label_smoothing)``: rows past n are padding (see
    ``pad_to_row_multiple``) and get a zero gradient. ``nll`` is the unsmoothed summed negative
    log-likelihood (for reporting; no gradient).
    """
    if target.numel() > logits.size(0):
        raise ValueError(f"{target.numel()} targets for {logits.size(0)} rows of scores")
    return _CrossEntropySum.apply(logits, target, label_smoothing)  # type: ignore[no-untyped-call]


# Up to this many rows a search step's products run faster with the weight on the left
# (``step_linear``); at 320 rows (64 sentences x beam 5) they no longer did.
STEP_ROWS = 64

# Inside ``packed_weights()``, ``step_linear`` multiplies a packed weight when it has at least
# PACKED_MIN_OUTPUTS outputs (a vocabulary: faster at every row count) or the step has at most
# PACKED_MAX_ROWS rows (every product: faster up to here, slower at 160 and 320 rows).
PACKED_MIN_OUTPUTS = 2048
PACKED_MAX_ROWS = 64
PACKING_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                                    "_linear_pointwise")
_scope = threading.local()  # .copies: the PackedCopies of the packed_weights() in force


class PackedCopies:
    """Weights packed for oneDNN's product, made at first use; made again when a weight's
    storage or version changes (``load_state_dict``, any in-place change autograd sees).

    An inference object (``Translator``, ``Generator``) keeps one for its lifetime, so a
    one-sentence call does not pay the packing (about 8 ms for 512 x 8,000). A model being
    trained must not be searched with kept copies: an optimizer step may change weights
    without bumping their version (the fused Adam step does); without kept copies every
    search packs afresh (``packed_weights()``).
    """

    def __init__(self, max_rows: int = 0) -> None:
        # id(weight) -> (weight, its (address, version) when packed, packed copy); holding
        # the weight keeps its id from being reused.
        self._copies: dict[int, tuple[torch.Tensor, tuple[int, int], torch.Tensor]] = {}
        # a narrow weight is packed up to this many rows (0: PACKED_MAX_ROWS); an inference
        # object raises it where oneDNN measured faster at its rows (``decoding.onednn``)
        self.max_rows = max_rows

    def get(self, weight: torch.Tensor) -> torch.Tensor:
        stamp = (weight.data_ptr(), weight._version)
        kept = self._copies.get(id(weight))
        if kept is None or kept[1] != stamp:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
            kept = self._copies[id(weight)] = (weight, stamp, packed)
        return kept[2]


@contextmanager
def packed_weights(copies: PackedCopies | None = None) -> Iterator[None]:
    """Within: ``step_linear`` (and so ``cell_step``) multiplies float32 CPU weights in
    packed copies from ``copies`` (default: new ones, dropped at the end of the scope) where
    that pays (``_packed``). An inner scope uses the outer one's copies. Every fast search is
    one scope, so a model that is being trained is packed again for each search.
    """
    outer = getattr(_scope, "copies", None)
    if outer is None:
        _scope.copies = copies if copies is not None else PackedCopies()
    try:
        yield
    finally:
        _scope.copies = outer


def _packed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    """The packed copy of ``weight`` to multiply ``x`` [..., in] by; None where none pays:
    outside ``packed_weights()``, with a gradient to compute, off CPU, in another dtype or
    under autocast, and for a narrow weight at more than the copies' ``max_rows`` rows."""
    copies = getattr(_scope, "copies", None)
    if (copies is None or not PACKING_AVAILABLE or torch.is_grad_enabled()
            or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
            or torch.onnx.is_in_onnx_export()):
        return None
    max_rows = copies.max_rows or PACKED_MAX_ROWS
    if weight.size(0) < PACKED_MIN_OUTPUTS and x.numel() > max_rows * x.size(-1):
        return None
    return copies.get(weight)


_products = threading.local()  # .onednn: inside onednn_products(True) on this thread


@contextmanager
def onednn_products(enabled: bool = True) -> Iterator[None]:
    """Within (on this thread), ``linear`` multiplies float32 CPU tensors with oneDNN's
    product instead of ATen's, forward and backward; ``enabled=False`` is ATen's. The trainer
    enters it around each step when ``resolve_float32_products`` measured oneDNN faster."""
    outer = getattr(_products, "onednn", False)
    _products.onednn = enabled and PACKING_AVAILABLE
    try:
        yield
    finally:
        _products.onednn = outer


def onednn_products_enabled() -> bool:
    """Whether ``linear`` runs in oneDNN here (inside ``onednn_products()`` on this thread)."""
    return bool(getattr(_products, "onednn", False))


def _onednn_product(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias in oneDNN. ``weight`` must be contiguous or a transposed contiguous
    tensor: any other stride sends oneDNN to a reference kernel hundreds of times slower."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    """``F.linear`` with all three products in oneDNN: the output, and in the backward pass
    grad @ W (W transposed in place, no copy) and the weight's gradient grad.T @ x.

    oneDNN takes its left operand in row order only, so one of grad and x is copied
    transposed for the weight's gradient: grad [N, out] itself, or x [N, in] and then the
    product (x.T @ grad).T [out, in], whichever copies fewer elements. For the output layer
    (1,152 rows, 512 -> 8,000) the second takes 26 ms where the first takes 48."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        rows = grad.reshape(-1, grad.size(-1)).contiguous()
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_product(rows, weight.t()).view(x.shape)
        if ctx.needs_input_grad[1]:
            inputs = x.reshape(-1, x.size(-1)).contiguous()
            if rows.numel() <= inputs.numel() + weight.numel():
                grad_weight = _onednn_product(rows.t(), inputs.t())
            else:
                grad_weight = _onednn_product(inputs.t(), rows.t()).t().contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` ([..., in] -> [..., out]); inside ``onednn_products()``,
    for float32 CPU tensors outside autocast, computed by oneDNN (with its gradients): the
    same values up to summation order (tested against ``F.linear``)."""
    if (not onednn_products_enabled() or x.device.type != "cpu"
            or x.dtype != torch.float32 or weight.dtype != torch.float32
            or not weight.is_contiguous() or torch.is_autocast_enabled("cpu")
            or torch.onnx.is_in_onnx_export()):
        return torch.nn.functional.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias)):
        product: torch.Tensor = _OneDnnLinear.apply(x, weight, bias)  # type: ignore[no-untyped-call]
        return product
    return _onednn_product(x, weight, bias)


class Linear(torch.nn.Linear):
    """``nn.Linear`` (the same parameters and state dict) computed by ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def step_linear(x: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for the few rows of one search step ([..., in] -> [..., out]).

    Without a gradient to compute, on CPU, it takes one of two faster routes to the same
    values up to summation order (tested against ``F.linear``):

    - inside ``packed_weights()`` (every fast search), in float32, for a vocabulary-wide
      weight or at most ``PACKED_MAX_ROWS`` rows: oneDNN's product with the weight packed
      once. On 2 cores of an AMD EPYC: [5 x 512] x [512 x 8,000] 0.64 ms against 2.97 as
      ``F.linear`` (MKL), [160 x 512] x [512 x 8,000] 9.0 against 10.7 ms, [5 x 768] x
      [768 x 1,536] 0.15 against 0.30 ms (BENCHMARKS.md, "What the fast search buys").
    - otherwise up to ``STEP_ROWS`` rows (bfloat16 autocast, a torch without oneDNN), the
      product the other way round, (W x^T)^T, copied back to row order: MKL takes a few rows
      against a wide weight faster with the weight on the left ([64 x 512] x [512 x 8,000]:
      8.5 ms as x W^T, 5.0 ms as (W x^T)^T).

    Training takes ``linear`` (oneDNN inside ``onednn_products()``), CUDA and ONNX export
    ``F.linear`` itself.
    """
    # Training takes the first test: nothing is added to its decoder loop but this check.
    if torch.is_grad_enabled() or x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return linear(x, weight, bias)
    packed = _packed(x, weight)
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    rows = x.reshape(-1, x.size(-1))
    if rows.size(0) > STEP_ROWS:
        return torch.nn.functional.linear(x, weight, bias)
    if bias is None:
        product = torch.mm(weight, rows.t())
    else:
        product = torch.addmm(bias.unsqueeze(1), weight, rows.t())
    return product.t().contiguous().view(*x.shape[:-1], -1)


_FUSED_CELLS = {"gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


def cell_step(cell: str, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None,
              w_ih: torch.Tensor, w_hh: torch.Tensor, added: torch.Tensor, b_hh: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One step of a ``cell`` ("rnn", "gru", "lstm") layer: x [B, I], h and c (LSTM) [B, H]
    -> new h, new c (None but for an LSTM). Its input gates are x @ w_ih.T + ``added``, the
    input bias [G*H] or gates [B, G*H] computed beforehand (bias included).

    ATen's cell functions (``torch.gru_cell``, ...) compute it, but where ``step_linear``
    multiplies the step's weights packed (a search of at most ``PACKED_MAX_ROWS`` rows), the
    same formulas run here around those two products (a one-sentence beam search spends about
    a third of its step in them), in place; and with a gradient to compute inside
    ``onednn_products()``, out of place around ``linear``'s products (tested against ATen's).
    """
    if torch.is_grad_enabled() and onednn_products_enabled():
        gates_x = linear(x, w_ih, added) if added.dim() == 1 else linear(x, w_ih) + added
        return _cell_from_gates(cell, gates_x, linear(h, w_hh, b_hh), h, c)
    if _packed(x, w_ih) is None:
        if cell == "lstm":
            assert c is not None
            return torch.lstm_cell(x, (h, c), w_ih, w_hh, added, b_hh)
        return _FUSED_CELLS[cell](x, h, w_ih, w_hh, added, b_hh), None
    if added.dim() == 1:
        gates_x = step_linear(x, w_ih, added)
    else:
        gates_x = step_linear(x, w_ih).add_(added)
    gates_h = step_linear(h, w_hh, b_hh)
    if cell == "rnn":
        return gates_x.add_(gates_h).tanh_(), None
    if cell == "gru":  # r, z, n: n = tanh(x_n + r * h_n), h' = n + z * (h - n)
        x_r, x_z, x_n = gates_x.chunk(3, 1)
        h_r, h_z, h_n = gates_h.chunk(3, 1)
        reset, update = x_r.add_(h_r).sigmoid_(), x_z.add_(h_z).sigmoid_()
        new = x_n.addcmul_(reset, h_n).tanh_()
        return torch.addcmul(new, update, h - new), None
    assert c is not None  # LSTM: i, f, g, o; c' = f c + i g, h' = o tanh(c')
    i, f, g, o = gates_x.add_(gates_h).chunk(4, 1)
    new_c = torch.addcmul(f.sigmoid_() * c, i.sigmoid_(), g.tanh_())
    return o.sigmoid_() * new_c.tanh(), new_c


def _cell_from_gates(cell: str, gates_x: torch.Tensor, gates_h: torch.Tensor, h: torch.Tensor,
                     c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``cell_step``'s formulas after its two products, out of place (autograd records them)."""
    if cell == "rnn":
        return torch.tanh(gates_x + gates_h), None
    if cell == "gru":
        x_r, x_z, x_n = gates_x.chunk(3, 1)
        h_r, h_z, h_n = gates_h.chunk(3, 1)
        reset, update = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        new = torch.tanh(torch.addcmul(x_n, reset, h_n))
        return torch.addcmul(new, update, h - new), None
    assert c is not None
    i, f, g, o = (gates_x + gates_h).chunk(4, 1)
    new_c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
    return torch.sigmoid(o) * torch.tanh(new_c), new_c


def tanh_(x: torch.Tensor) -> torch.Tensor:
    """``x.tanh_()``; on CPU in float32 computed as 2 sigmoid(2x) - 1, in place.

    The same function (within 2e-7: the form loses a little relative precision near 0, none
    that a sum of energies can see), 2.3-2.7x faster on CPU, where torch's vectorised sigmoid
    is much cheaper than its tanh: on 2 cores of an AMD EPYC, over the [64 x 12 x 384]
    energies of one Bahdanau step, 552 us as ``Tensor.tanh_``, 237 us this way. Those
    energies are the largest element-wise work of a search step (BENCHMARKS.md, "What the
    fast search buys"). bfloat16 keeps ``Tensor.tanh_`` (2 sigmoid - 1 would double its
    rounding error), as do CUDA and ONNX export.
    """
    if x.dtype != torch.float32 or x.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return x.tanh_()
    return x.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


class ProjectsToVocabulary(Protocol):
    """A model with an output layer: the translation decoder's, the language model's."""

    def logits(self, features: torch.Tensor) -> torch.Tensor: ...


def sequence_loss(model: ProjectsToVocabulary, features: torch.Tensor, targets: torch.Tensor,
                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed cross-entropy over the real (non-pad) target tokens.

    Only non-pad positions are projected to the vocabulary: the output layer is the most
    expensive matrix product of the model, so padding is dropped before it. Under autocast
    or ``onednn_products()`` (oneDNN compiles a kernel per shape there too) the kept rows are
    padded with zero rows to a multiple of ``AUTOCAST_ROW_MULTIPLE`` (see
    ``pad_to_row_multiple``); the loss skips those rows and gives them no gradient.
    Returns (loss_sum for backprop, nll_sum without smoothing for reporting, token count).
    """
    keep = targets != PAD_ID
    rows = features[keep]
    if torch.is_autocast_enabled(rows.device.type) or onednn_products_enabled():
        rows = pad_to_row_multiple(rows, AUTOCAST_ROW_MULTIPLE)
    logits = model.logits(rows).float()
    gold = targets[keep]
    loss, nll = cross_entropy_sum(logits, gold, label_smoothing)
    return loss, nll, int(gold.numel())
