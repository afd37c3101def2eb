"""Encoder, attention and decoder behave as documented (shapes, masking, path equivalence)."""

import pytest
import torch
import torch.nn.functional as F

from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.models import functional
from seq2seq.models.attention import additive_scores, build_attention
from seq2seq.models.encoder import RecurrentEncoder
from seq2seq.models.functional import (
    AUTOCAST_ROW_MULTIPLE,
    PACKED_MAX_ROWS,
    PACKED_MIN_OUTPUTS,
    PACKING_AVAILABLE,
    STEP_ROWS,
    cell_step,
    cross_entropy_sum,
    linear,
    onednn_products,
    packed_weights,
    pad_to_row_multiple,
    sequence_loss,
    step_linear,
    tanh_,
)
from seq2seq.models.translation import TranslationModel
from seq2seq.tokenizers import BOS_ID, EOS_ID, PAD_ID

ATTENTIONS = [("bahdanau", "general"), ("luong", "dot"), ("luong", "general"), ("luong", "concat")]


@pytest.mark.parametrize("kind,score", ATTENTIONS)
def test_attention_shapes_and_masked_positions_get_zero_weight(kind, score):
    torch.manual_seed(0)
    attention = build_attention(kind, score, query_size=8, memory_size=8)
    memory = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    query = torch.randn(3, 4, 8)
    context, weights = attention(query, attention.project_memory(memory), memory, mask)
    assert context.shape == (3, 4, 8) and weights.shape == (3, 4, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))
    assert (weights.masked_select(~mask.unsqueeze(1).expand(-1, 4, -1)) == 0).all()
    # Changing padded memory cannot change the result.
    noisy = memory.clone()
    noisy[~mask] = 100.0
    context2, _ = attention(query, attention.project_memory(noisy), noisy, mask)
    assert torch.allclose(context, context2, atol=1e-6)


@pytest.mark.parametrize("queries", [1, 4])
def test_additive_scores_match_the_plain_expression_in_value_and_gradient(queries):
    # The memory-saving function recomputes tanh in its backward pass; autograd's own
    # derivative of the written-out expression is the reference (float64, so exact to 1e-10).
    torch.manual_seed(0)
    query = torch.randn(3, queries, 6, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, queries, 5, dtype=torch.float64)
    plain = torch.tanh(query.unsqueeze(2) + keys.unsqueeze(1)) @ v
    expected = torch.autograd.grad((plain * upstream).sum(), (query, keys, v))
    scores = additive_scores(query, keys, v)
    got = torch.autograd.grad((scores * upstream).sum(), (query, keys, v))
    assert torch.allclose(scores, plain, atol=1e-12)
    for g, e in zip(got, expected):
        assert torch.allclose(g, e, atol=1e-10)


def test_tanh_in_place_is_torchs_tanh():
    # float32 on CPU goes through 2 sigmoid(2x) - 1; the float64 tanh is the reference.
    x = torch.cat([torch.linspace(-30, 30, 200_001),
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, float("inf"), float("-inf")])])
    out = x.clone()
    assert tanh_(out) is out  # in place
    exact = torch.tanh(x.double())
    assert (out.double() - exact).abs().max() < 2.5e-7
    assert out[-2] == 1 and out[-1] == -1 and out.abs().max() == 1
    assert torch.isnan(tanh_(torch.tensor([float("nan")]))).all()
    half = torch.linspace(-5, 5, 1001).bfloat16()  # bfloat16 keeps torch's tanh
    assert torch.equal(tanh_(half.clone()), half.tanh())


def test_additive_scores_in_float32_match_the_float64_expression():
    # The float32 paths: training's (torch's tanh, recomputed in the backward) and the
    # search's (tanh_: 2 sigmoid(2x) - 1).
    torch.manual_seed(0)
    query = torch.randn(4, 3, 16, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(4, 7, 16, dtype=torch.float64, requires_grad=True)
    v = torch.randn(16, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 3, 7, dtype=torch.float64)
    plain = torch.tanh(query.unsqueeze(2) + keys.unsqueeze(1)) @ v
    expected = torch.autograd.grad((plain * upstream).sum(), (query, keys, v))
    leaves = [t.detach().float().requires_grad_() for t in (query, keys, v)]
    scores = additive_scores(*leaves)
    got = torch.autograd.grad((scores * upstream.float()).sum(), leaves)
    assert torch.allclose(scores.double(), plain, atol=1e-5)
    for g, e in zip(got, expected):
        assert torch.allclose(g.double(), e, atol=1e-4)
    with torch.no_grad():  # the search's path
        assert torch.allclose(additive_scores(*leaves).double(), plain, atol=1e-5)


def test_training_and_search_take_the_fast_tanh_training_in_float32(monkeypatch):
    # The backward pass recomputes the energies with the same tanh as the forward pass, so
    # 1 - tanh^2 matches the values the scores were made of (gradients: the test above).
    from seq2seq.models import attention
    fast = []
    monkeypatch.setattr(attention, "tanh_", lambda x: fast.append((x.shape, x.dtype)) or x.tanh_())
    query = torch.randn(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    keys, v = torch.randn(2, 5, 4, dtype=torch.bfloat16), torch.randn(4, requires_grad=True)
    additive_scores(query, keys, v).sum().backward()
    assert fast == [((2, 3, 5, 4), torch.float32)] * 2  # forward, and again in backward
    with torch.no_grad():
        additive_scores(query.float(), keys.float(), v)
    assert fast[2:] == [((2, 3, 5, 4), torch.float32)]


def test_additive_attention_gradients_under_bfloat16_autocast_stay_close_to_float32():
    # Small states, as at initialisation, make tanh nearly linear, so the query's gradient is
    # a sum over keys that nearly cancels. Computed in bfloat16 it was 30 % off; the scores
    # are computed in float32 under autocast, and every gradient stays within 2 %.
    torch.manual_seed(0)
    attention = build_attention("bahdanau", "general", query_size=64, memory_size=64)
    memory, query = 0.1 * torch.randn(8, 20, 64), 0.1 * torch.randn(8, 6, 64)
    mask = torch.ones(8, 20, dtype=torch.bool)
    upstream = torch.randn(8, 6, 64)

    def gradients(autocast: bool) -> list[torch.Tensor]:
        attention.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            context, _ = attention(query, attention.project_memory(memory), memory, mask)
        (context.float() * upstream).sum().backward()
        return [p.grad.clone() for p in attention.parameters()]

    for (name, _), low, full in zip(attention.named_parameters(), gradients(True), gradients(False)):
        assert low.dtype == torch.float32, name
        assert (low - full).norm() / full.norm() < 0.02, name


def test_no_attention_builds_nothing():
    assert build_attention("none", "general", 8, 8) is None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_encoder_ignores_padding(cell):
    torch.manual_seed(0)
    encoder = RecurrentEncoder(cell, 4, 6, layers=2, bidirectional=True)
    x = torch.randn(1, 3, 4)
    padded = torch.cat([x, torch.randn(1, 2, 4)], dim=1)
    out_short, final_short = encoder(x, torch.tensor([3]))
    out_long, final_long = encoder(padded, torch.tensor([3]))
    assert out_long.shape == (1, 5, 12)
    assert torch.allclose(out_short, out_long[:, :3], atol=1e-6)
    assert (out_long[:, 3:] == 0).all()
    h_short = final_short[0] if cell == "lstm" else final_short
    h_long = final_long[0] if cell == "lstm" else final_long
    assert torch.allclose(h_short, h_long, atol=1e-6)
    assert encoder.merge_directions(h_long).shape == (2, 1, 12)


def small_model(cell="gru", attention="bahdanau", input_feeding=True, layers=1,
                attentional_output="tanh", **extra):
    config = ModelConfig(
        embedding_size=8,
        encoder=EncoderConfig(cell=cell, hidden_size=6, layers=layers, bidirectional=True, dropout=0.0),
        decoder=DecoderConfig(cell=cell, hidden_size=10, layers=layers, attention=attention,
                              input_feeding=input_feeding, dropout=0.0,
                              attentional_output=attentional_output),
        embedding_dropout=0.0, output_dropout=0.0, **extra)
    return TranslationModel(config, src_vocab_size=15, trg_vocab_size=17).eval()


def random_batch(batch=3, src_len=6, trg_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 15, (batch, src_len), generator=g)
    lengths = torch.tensor([src_len] + [src_len - 1 - i for i in range(batch - 1)])
    for b, n in enumerate(lengths):
        src[b, n - 1] = EOS_ID
        src[b, n:] = PAD_ID
    trg = torch.randint(4, 17, (batch, trg_len), generator=g)
    trg[:, 0] = BOS_ID
    return src, lengths, trg


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("attention,feeding,output", [
    ("none", False, "tanh"), ("bahdanau", False, "tanh"), ("bahdanau", True, "tanh"),
    ("luong", True, "tanh"), ("bahdanau", True, "linear"), ("luong", False, "linear"),
    ("bahdanau", False, "linear")])  # the last: the demo's decoder
def test_whole_sequence_forward_equals_step_by_step(cell, attention, feeding, output):
    """The fused training path and the one-step search path compute the same function."""
    torch.manual_seed(0)
    model = small_model(cell, attention, feeding, layers=2, attentional_output=output)
    src, lengths, trg = random_batch()
    features, _ = model(src, lengths, trg)
    state = model.encode(src, lengths)
    stepwise = []
    for t in range(trg.size(1)):
        log_probs, state, _ = model.decode_step(trg[:, t], state)
        stepwise.append(log_probs)
    expected = torch.log_softmax(model.logits(features), -1)
    assert torch.allclose(torch.stack(stepwise, 1), expected, atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 5, STEP_ROWS, STEP_ROWS + 1])
def test_step_linear_is_the_layer_multiplied_the_other_way_round(bias, rows, monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, 300, bias=bias)
    x = torch.randn(rows, 48)
    products = []
    for name in ("mm", "addmm"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, real=real, **k: products.append(a) or real(*a, **k))
    with torch.no_grad():
        fast = step_linear(x, layer.weight, layer.bias)
        plain = layer(x)
    assert fast.shape == plain.shape and fast.is_contiguous()
    assert torch.allclose(fast, plain, atol=1e-5)
    weight_on_the_left = [a for a in products if any(t is layer.weight for t in a)]
    assert len(weight_on_the_left) == (rows <= STEP_ROWS)  # beyond STEP_ROWS: F.linear
    assert step_linear(x, layer.weight, layer.bias).grad_fn is not None  # training: F.linear


def packed_copies(copies):
    return [packed for _, _, packed in copies._copies.values()]


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("bias", [True, False])
def test_step_linear_multiplies_a_wide_weight_packed_once_per_scope(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, PACKED_MIN_OUTPUTS, bias=bias)
    narrow = torch.nn.Linear(48, 300, bias=bias)
    with torch.no_grad(), packed_weights():
        for shape in [(PACKED_MAX_ROWS + 1, 48), (320, 48), (1, 48), (5, 48), (2, 7, 48)]:
            x = torch.randn(shape)
            for linear in (layer, narrow):
                fast = step_linear(x, linear.weight, linear.bias)
                assert fast.shape == linear(x).shape and fast.is_contiguous()
                assert torch.allclose(fast, linear(x), atol=1e-5)
            # A wide weight is packed at every row count, a narrow one only for a few rows.
            copies = functional._scope.copies._copies
            assert list(copies) == ([id(layer.weight)] if x.numel() > PACKED_MAX_ROWS * 48
                                    else [id(layer.weight), id(narrow.weight)])
        with packed_weights():  # an inner scope uses the outer one's copies
            step_linear(x, layer.weight, layer.bias)
        assert all(copy.is_mkldnn for copy in packed_copies(functional._scope.copies))
        assert len(packed_copies(functional._scope.copies)) == 2  # each weight packed once
    assert functional._scope.copies is None
    # A weight changed without a version bump (as the fused Adam step changes it) is packed
    # again by the next scope: nothing outlives a scope without kept copies.
    layer.weight.data.mul_(-1.0)
    x = torch.randn(3, 48)
    with torch.no_grad(), packed_weights():
        assert torch.allclose(step_linear(x, layer.weight, layer.bias), layer(x), atol=1e-5)


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("gates_given", [False, True])
def test_cell_step_with_packed_products_is_the_fused_cell(cell, gates_given):
    torch.manual_seed(0)
    layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](12, 16)
    w_ih, w_hh, b_ih, b_hh = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
    for rows in (1, 7, PACKED_MAX_ROWS, PACKED_MAX_ROWS + 1):
        x, h, c = torch.randn(rows, 12), torch.randn(rows, 16), torch.randn(rows, 16)
        c = c if cell == "lstm" else None
        # ``added``: the input bias, or per-row gates computed beforehand (bias included)
        added = torch.randn(rows, w_ih.size(0)) if gates_given else b_ih
        with torch.no_grad():
            plain = cell_step(cell, x, h, c, w_ih, w_hh, added, b_hh)  # fused (no scope)
            with packed_weights():
                fast = cell_step(cell, x, h, c, w_ih, w_hh, added, b_hh)
                made = len(functional._scope.copies._copies)
        assert made == (2 if rows <= PACKED_MAX_ROWS else 0)  # both products, or neither
        assert (plain[1] is None) == (fast[1] is None) == (cell != "lstm")
        for expected, got in zip(plain, fast, strict=True):
            if expected is not None:
                assert torch.allclose(got, expected, atol=1e-6)


def _in_graph(tensor, name):
    """Whether the autograd graph behind ``tensor`` holds a node called ``name``."""
    stack, seen = [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == name:
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def _gradients(function, *tensors):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    outputs = function(*leaves)
    outputs = [o for o in (outputs if isinstance(outputs, tuple) else (outputs,)) if o is not None]
    upstream = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i))
                for i, o in enumerate(outputs)]
    torch.autograd.backward(outputs, upstream)
    return outputs, [t.grad for t in leaves if t is not None]


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(7, 12), (3, 5, 12), (64, 12)])  # 64 rows: the weight's
def test_linear_in_onednn_equals_f_linear_in_value_and_gradients(bias, shape):  # gradient (x.T g).T
    torch.manual_seed(0)
    x, weight = torch.randn(*shape), torch.randn(20, 12)
    b = torch.randn(20) if bias else None
    plain, plain_grads = _gradients(F.linear, x, weight, b)
    with onednn_products():
        fast, fast_grads = _gradients(linear, x, weight, b)
        assert fast[0].grad_fn.name() == "_OneDnnLinearBackward"
        with torch.no_grad():  # no gradient: the product alone, still oneDNN's
            assert torch.allclose(linear(x, weight, b), plain[0], atol=1e-5)
    assert fast[0].shape == plain[0].shape
    for got, expected in zip(fast + fast_grads, plain + plain_grads, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)
    with onednn_products(False):  # off, or anything but a contiguous float32 CPU weight
        assert _gradients(linear, x, weight, b)[0][0].grad_fn.name() != "_OneDnnLinearBackward"
    with onednn_products():
        sliced = torch.randn(20, 24)[:, :12]  # oneDNN would take a slow reference kernel
        assert linear(x, sliced, b).grad_fn is None and torch.allclose(
            linear(x, sliced, b), F.linear(x, sliced, b))
        assert linear(x.double(), weight.double()).dtype == torch.float64


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("gates_given", [False, True])
def test_cell_step_in_onednn_equals_atens_cell_in_value_and_gradients(cell, gates_given):
    torch.manual_seed(0)
    layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](12, 16)
    weights = [p.detach() for p in (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_hh_l0)]
    x, h = torch.randn(9, 12), torch.randn(9, 16)
    c = torch.randn(9, 16) if cell == "lstm" else None
    added = torch.randn(9, weights[0].size(0)) if gates_given else layer.bias_ih_l0.detach()

    def step(x, h, c, w_ih, w_hh, added, b_hh):
        return cell_step(cell, x, h, c, w_ih, w_hh, added, b_hh)

    tensors = (x, h, c, weights[0], weights[1], added, weights[2])
    plain, plain_grads = _gradients(step, *tensors)
    with onednn_products():
        fast, fast_grads = _gradients(step, *tensors)
    assert _in_graph(fast[0], "_OneDnnLinearBackward")
    assert not _in_graph(plain[0], "_OneDnnLinearBackward")
    for got, expected in zip(fast + fast_grads, plain + plain_grads, strict=True):
        assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_training_step_in_onednn_equals_atens(cell):
    """Loss and every parameter's gradient of a translation model, both products."""
    torch.manual_seed(0)
    model = small_model(cell, "bahdanau", True, layers=2).train()
    src, lengths, trg = random_batch()

    def gradients():
        model.zero_grad()
        features, _ = model(src, lengths, trg[:, :-1])
        loss, _, _ = sequence_loss(model, features, trg[:, 1:])
        loss.backward()
        return loss, {name: p.grad.clone() for name, p in model.named_parameters()}

    plain_loss, plain = gradients()
    with onednn_products():
        fast_loss, fast = gradients()
    assert _in_graph(fast_loss, "_OneDnnLinearBackward")
    assert torch.allclose(fast_loss, plain_loss, rtol=1e-5)
    for name, grad in plain.items():
        assert torch.allclose(fast[name], grad, atol=1e-5), name


@pytest.mark.skipif(not PACKING_AVAILABLE, reason="this torch build has no oneDNN")
def test_kept_packed_copies_last_until_the_weight_changes():
    torch.manual_seed(0)
    layer = torch.nn.Linear(48, PACKED_MIN_OUTPUTS)
    kept = functional.PackedCopies()
    x = torch.randn(4, 48)
    with torch.no_grad():
        with packed_weights(kept):
            step_linear(x, layer.weight, layer.bias)
        (first,) = packed_copies(kept)
        with packed_weights(kept):
            assert torch.allclose(step_linear(x, layer.weight, layer.bias), layer(x), atol=1e-5)
        assert packed_copies(kept) == [first]  # the same copy: not packed again
        layer.load_state_dict({"weight": -layer.weight, "bias": layer.bias})  # version bump
        with packed_weights(kept):
            assert torch.allclose(step_linear(x, layer.weight, layer.bias), layer(x), atol=1e-5)
        (second,) = packed_copies(kept)
        assert second is not first
        step_linear(x, layer.weight, layer.bias)  # outside a scope: no copy is used or made
    assert packed_copies(kept) == [second]


@pytest.mark.parametrize("feeding", [True, False])
def test_search_steps_without_gradients_equal_the_plain_steps(feeding):
    """``decode_step`` under no_grad (search: the output layer by ``step_linear``) gives the
    log-probabilities of the plain step."""
    torch.manual_seed(0)
    model = small_model("gru", "bahdanau", feeding, layers=1, attentional_output="linear").eval()
    src, lengths, trg = random_batch()
    plain_state = fast_state = model.encode(src, lengths)
    for t in range(trg.size(1)):
        plain, plain_state, _ = model.decode_step(trg[:, t], plain_state)
        with torch.no_grad():
            fast, fast_state, _ = model.decode_step(trg[:, t], fast_state)
        assert torch.allclose(fast, plain, atol=1e-5)


def test_linear_attentional_output_is_the_tanh_output_before_squashing():
    # Without input feeding the output does not feed back, so the same weights give
    # a_t = W [h; c] in one model and tanh of exactly that in the other.
    src, lengths, trg = random_batch()
    outputs = {}
    for kind in ("tanh", "linear"):
        torch.manual_seed(0)
        model = small_model(input_feeding=False, attentional_output=kind)
        outputs[kind], _ = model(src, lengths, trg)
    assert not torch.allclose(outputs["linear"], outputs["tanh"], atol=1e-3)  # really unsquashed
    assert torch.allclose(torch.tanh(outputs["linear"]), outputs["tanh"], atol=1e-6)


def test_scheduled_sampling_with_full_teacher_forcing_matches_forward():
    torch.manual_seed(0)
    model = small_model()
    src, lengths, trg = random_batch()
    features, _ = model(src, lengths, trg)
    state = model.encode(src, lengths)
    sampled = model._forward_sampled(trg, state, teacher_forcing=1.0)
    assert torch.allclose(features, sampled, atol=1e-6)


def test_tied_and_shared_embeddings_are_one_tensor():
    config = ModelConfig(embedding_size=10, share_embeddings=True, tie_embeddings=True,
                         decoder=DecoderConfig(hidden_size=10))
    model = TranslationModel(config, 20, 20)
    assert model.src_embed.weight is model.trg_embed.weight is model.output_layer.weight


def test_sequence_loss_under_autocast_pads_rows_without_changing_loss_or_gradients():
    # Under autocast the output layer sees a row count padded to a multiple of 128 (so
    # oneDNN's per-shape kernels are reused); the padding must not reach the loss.
    torch.manual_seed(0)
    model = small_model().train()
    src, lengths, trg = random_batch(batch=4, trg_len=7)
    trg[1, 5:] = PAD_ID
    keep = trg[:, 1:] != PAD_ID
    assert int(keep.sum()) % AUTOCAST_ROW_MULTIPLE != 0

    def loss_and_grad(padded: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features, _ = model(src, lengths, trg[:, :-1])
            features.retain_grad()
            if padded:
                loss, nll, count = sequence_loss(model, features, trg[:, 1:])
            else:
                logits = model.logits(features[keep]).float()
                loss = torch.nn.functional.cross_entropy(logits, trg[:, 1:][keep], reduction="sum")
                nll, count = loss.detach(), int(keep.sum())
        loss.backward()
        return loss.detach(), nll, count, features.grad.clone(), model.output_layer.weight.grad.clone()

    padded, plain = loss_and_grad(True), loss_and_grad(False)
    assert padded[2] == plain[2] == int(keep.sum())
    for got, expected in zip(padded[:2] + padded[3:], plain[:2] + plain[3:]):
        assert torch.allclose(got, expected, rtol=1e-2, atol=1e-3)


def test_pad_to_row_multiple_appends_zero_rows():
    rows = torch.randn(130, 3)
    padded = pad_to_row_multiple(rows, 128)
    assert padded.shape == (256, 3) and torch.equal(padded[:130], rows)
    assert (padded[130:] == 0).all()
    assert pad_to_row_multiple(rows[:128], 128).shape == (128, 3)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_sum_matches_torch_and_ignores_padding_rows(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(10, 7, requires_grad=True)
    target = torch.randint(0, 7, (8,))  # rows 8 and 9 are padding
    loss, nll = cross_entropy_sum(logits, target, smoothing)
    (2.0 * loss).backward()
    ours = logits.grad.clone()
    logits.grad = None
    expected = F.cross_entropy(logits[:8], target, reduction="sum", label_smoothing=smoothing)
    (2.0 * expected).backward()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(nll, F.cross_entropy(logits[:8], target, reduction="sum"), atol=1e-5)
    assert torch.allclose(ours, logits.grad, atol=1e-6)
    assert (ours[8:] == 0).all()
