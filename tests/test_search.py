"""Greedy and beam search: agreement, optimality under the model, n-best, length rules."""

import pytest
import torch

from seq2seq import fast_search, search
from seq2seq.config import DecoderConfig, EncoderConfig, ModelConfig
from seq2seq.models import functional
from seq2seq.models.translation import TranslationModel
from seq2seq.search import block_repeated_ngrams, max_output_lengths, start_tokens
from seq2seq.tokenizers import EOS_ID, PAD_ID

VOCAB = 12


def peaked_model(seed=0, cell="gru", attention="bahdanau"):
    """A random model whose output layer is scaled up so distributions are peaked but varied,
    and </s> is likely enough that hypotheses end at different lengths."""
    torch.manual_seed(seed)
    config = ModelConfig(
        embedding_size=8,
        encoder=EncoderConfig(cell=cell, hidden_size=8, dropout=0.0),
        decoder=DecoderConfig(cell=cell, hidden_size=16, attention=attention, dropout=0.0),
        embedding_dropout=0.0, output_dropout=0.0)
    model = TranslationModel(config, VOCAB, VOCAB).eval()
    with torch.no_grad():
        model.output_layer.weight.mul_(3.0)
        model.output_layer.bias[EOS_ID] = 1.0
    return model


def greedy_search(model, src, lengths, limits, **options):
    state = model.encode(src, lengths)
    return fast_search.greedy_search(model, state, start_tokens(len(src)), limits, **options)


def beam_search(model, src, lengths, limits, beam_size, **options):
    state = model.encode(src, lengths)
    return fast_search.beam_search(model, state, start_tokens(len(src)), limits, beam_size, **options)


def sources(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g)
    src = torch.full((n, int(lengths.max())), PAD_ID)
    for i, length in enumerate(lengths.tolist()):
        src[i, : length - 1] = torch.randint(4, VOCAB, (length - 1,), generator=g)
        src[i, length - 1] = EOS_ID
    return src, lengths


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_size_one_is_greedy(cell):
    model = peaked_model(cell=cell)
    src, lengths = sources()
    limits = max_output_lengths(lengths, 2.0, 3)
    greedy = greedy_search(model, src, lengths, limits)
    beam = beam_search(model, src, lengths, limits, beam_size=1, alpha=0.0)
    assert [g.tokens for g in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert b[0].log_prob == pytest.approx(g.log_prob, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_larger_beams_never_score_worse_than_greedy(seed):
    """Beam search is not exact: a narrow beam can prune the greedy path. On these
    (deliberately peaked, repetitive) random models a beam of 5 never scores below greedy on
    any sentence; a beam of 2 may lose a few sentences but wins on average."""
    model = peaked_model(seed)
    src, lengths = sources(n=48, seed=seed + 10)
    limits = max_output_lengths(lengths, 2.0, 3)
    greedy = greedy_search(model, src, lengths, limits)
    wide = beam_search(model, src, lengths, limits, beam_size=5, alpha=0.0)
    for g, b in zip(greedy, wide):
        assert b[0].log_prob >= g.log_prob - 1e-4
    assert sum(b[0].log_prob > g.log_prob + 1e-4 for g, b in zip(greedy, wide)) > 0
    narrow = beam_search(model, src, lengths, limits, beam_size=2, alpha=0.0)
    not_worse = sum(b[0].log_prob >= g.log_prob - 1e-4 for g, b in zip(greedy, narrow))
    assert not_worse >= 0.85 * len(greedy)
    assert sum(b[0].log_prob for b in narrow) >= sum(g.log_prob for g in greedy)


@torch.no_grad()
def test_scores_match_the_model():
    """A hypothesis's log_prob is the sum of the model's log-probabilities for its tokens."""
    model = peaked_model()
    src, lengths = sources(n=6)
    limits = max_output_lengths(lengths, 2.0, 3)
    hyps = beam_search(model, src, lengths, limits, beam_size=3, alpha=0.0, n_best=3)
    for i, n_best in enumerate(hyps):
        for hyp in n_best:
            state = model.encode(src[i: i + 1], lengths[i: i + 1])
            token, total = torch.tensor([2]), 0.0
            for t in hyp.tokens + [EOS_ID]:
                log_probs, state, _ = model.decode_step(token, state)
                total += float(log_probs[0, t].detach())
                token = torch.tensor([t])
            assert hyp.log_prob == pytest.approx(total, abs=1e-4)


def test_n_best_is_sorted_and_distinct():
    model = peaked_model()
    src, lengths = sources()
    limits = max_output_lengths(lengths, 2.0, 3)
    for alpha in (0.0, 1.0):
        for n_best in beam_search(model, src, lengths, limits, beam_size=4, alpha=alpha, n_best=4):
            scores = [h.score for h in n_best]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(h.tokens) for h in n_best}) == len(n_best)


def test_asking_for_one_hypothesis_stops_sooner_with_the_same_best():
    """A sentence is done once its n_best finished hypotheses beat every alive one. With
    alpha = 0 that test is exact, so asking for one hypothesis instead of the beam's K
    returns the same best, in fewer model steps."""
    model = peaked_model(seed=1)
    src, lengths = sources(n=32, seed=5)
    limits = max_output_lengths(lengths, 2.0, 3)
    steps = []
    decode_step = model.decode_step

    def counting_step(tokens, state):
        steps[-1] += tokens.numel()
        return decode_step(tokens, state)

    model.decode_step = counting_step
    results = {}
    for n_best in (4, 1):
        steps.append(0)
        results[n_best] = beam_search(model, src, lengths, limits, beam_size=4, alpha=0.0,
                                      n_best=n_best)
    for one, four in zip(results[1], results[4]):
        assert one[0].tokens == four[0].tokens
        assert one[0].log_prob == pytest.approx(four[0].log_prob, abs=1e-5)
    assert steps[1] < 0.9 * steps[0]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batching_does_not_change_results(beam_size):
    """Sentences decoded together equal sentences decoded one by one (finished rows leave
    the batch without disturbing the others)."""
    model = peaked_model()
    src, lengths = sources(n=10)
    limits = max_output_lengths(lengths, 2.0, 3)

    def run(s, n, m):
        if beam_size == 1:
            return [h.tokens for h in greedy_search(model, s, n, m)]
        return [h[0].tokens for h in beam_search(model, s, n, m, beam_size=beam_size)]

    together = run(src, lengths, limits)
    alone = [run(src[i: i + 1, : lengths[i]], lengths[i: i + 1], limits[i: i + 1])[0]
             for i in range(len(lengths))]
    assert together == alone


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("multiple", [3, 8, 64])
def test_finished_sequences_kept_as_filler_change_no_result(beam_size, multiple):
    """Dropping finished sequences from the batch several at a time (they ride along as
    filler until then, as under CPU bfloat16 autocast) gives the same hypotheses and scores:
    a filler row never finishes a hypothesis again or ends the search early."""
    model = peaked_model(seed=2)
    src, lengths = sources(n=21, seed=0)
    limits = max_output_lengths(lengths, 2.0, 3)

    def run(drop_multiple):
        if beam_size == 1:
            return [[h] for h in greedy_search(model, src, lengths, limits,
                                               drop_multiple=drop_multiple)]
        return beam_search(model, src, lengths, limits, beam_size=beam_size, n_best=3,
                           drop_multiple=drop_multiple)

    one_at_a_time, grouped = run(1), run(multiple)
    assert len({len(h.tokens) for hyps in one_at_a_time for h in hyps}) > 3  # ends vary
    for expected, got in zip(one_at_a_time, grouped):
        assert [h.tokens for h in got] == [h.tokens for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)


@pytest.mark.parametrize("cell,attention", [("gru", "bahdanau"), ("lstm", "luong")])
def test_beam_reorder_keeping_the_source_side_changes_no_result(cell, attention, monkeypatch):
    """Between drops, beam search reorders rows only among a sentence's own beams and keeps
    the encoded source where it is; copying the whole state instead gives the same result."""
    from seq2seq.models.decoder import DecoderState

    model = peaked_model(seed=3, cell=cell, attention=attention)
    src, lengths = sources(n=13, seed=4)
    limits = max_output_lengths(lengths, 2.0, 3)
    light = beam_search(model, src, lengths, limits, beam_size=4, n_best=4)
    monkeypatch.setattr(DecoderState, "reorder_beams", DecoderState.select)
    full = beam_search(model, src, lengths, limits, beam_size=4, n_best=4)
    assert len({len(h.tokens) for hyps in full for h in hyps}) > 3  # ends vary
    for expected, got in zip(full, light):
        assert [h.tokens for h in got] == [h.tokens for h in expected]
        assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-6)


def test_reorder_beams_keeps_the_source_side_and_moves_the_rest():
    model = peaked_model()
    src, lengths = sources(n=2)
    state = model.encode(src, lengths).select(torch.tensor([0, 0, 1, 1]))  # 2 beams each
    index = torch.tensor([1, 1, 3, 2])
    reordered, selected = state.reorder_beams(index), state.select(index)
    assert reordered.source is state.source
    for name, tensor in selected.named().items():
        assert torch.equal(reordered.named()[name], tensor)


def test_searches_drop_finished_sequences_in_groups_only_under_cpu_autocast():
    cpu = torch.device("cpu")
    assert fast_search.default_drop_multiple(cpu) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast_search.default_drop_multiple(cpu) == fast_search.AUTOCAST_DROP_MULTIPLE
    running = torch.tensor([True, False, True, False, False, True, False])
    assert fast_search.rows_to_keep(running, 1).tolist() == [0, 2, 5]
    assert fast_search.rows_to_keep(running, 4).tolist() == [0, 2, 5, 1]
    assert fast_search.rows_to_keep(running, 8) is None  # 8 rows would not be fewer


def test_length_limits():
    model = peaked_model()
    src, lengths = sources()
    limits = torch.full_like(lengths, 4)
    for hyp in greedy_search(model, src, lengths, limits, min_length=3):
        assert 2 <= len(hyp.tokens) <= 3  # </s> counts toward both limits
    for n_best in beam_search(model, src, lengths, limits, beam_size=3, min_length=3, n_best=3):
        for hyp in n_best:
            assert 2 <= len(hyp.tokens) <= 3


def test_no_repeat_ngram_blocking():
    model = peaked_model()
    src, lengths = sources()
    limits = torch.full_like(lengths, 12)
    for method in ("greedy", "beam"):
        if method == "greedy":
            outputs = [h.tokens for h in greedy_search(model, src, lengths, limits, no_repeat_ngram=2)]
        else:
            outputs = [h[0].tokens for h in beam_search(model, src, lengths, limits, 3,
                                                        no_repeat_ngram=2)]
        for tokens in outputs:
            bigrams = list(zip(tokens, tokens[1:]))
            assert len(bigrams) == len(set(bigrams))


def test_block_repeated_ngrams_unit():
    history = torch.tensor([[5, 6, 7, 5]])
    log_probs = torch.zeros(1, 10)
    block_repeated_ngrams(log_probs, history, 2)  # "5 6" was seen, so 6 may not follow 5
    assert log_probs[0, 6] == float("-inf")
    assert torch.isfinite(log_probs[0, [0, 1, 2, 3, 4, 5, 7, 8, 9]]).all()


def sample(model, src, lengths, limits, **options):
    state = model.encode(src, lengths)
    return fast_search.sample(model, state, start_tokens(len(src)), limits, **options)


def test_sampling_with_top_k_one_is_greedy():
    model = peaked_model()
    src, lengths = sources()
    limits = max_output_lengths(lengths, 2.0, 3)
    greedy = greedy_search(model, src, lengths, limits)
    drawn = sample(model, src, lengths, limits, top_k=1, temperature=0.7)
    assert [g.tokens for g in greedy] == [d.tokens for d in drawn]


def test_a_tiny_temperature_samples_the_best_token():
    """Scaled by 1e-45 every log-probability but the best overflows to -inf: the draw must
    take the best token, not fail on NaN probabilities."""
    model = peaked_model()
    src, lengths = sources()
    limits = max_output_lengths(lengths, 2.0, 3)
    greedy = greedy_search(model, src, lengths, limits)
    for temperature in (1e-45, 1e-300):
        drawn = sample(model, src, lengths, limits, temperature=temperature,
                       generator=torch.Generator().manual_seed(0))
        assert [g.tokens for g in greedy] == [d.tokens for d in drawn]


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    model = peaked_model()
    src, lengths = sources()
    limits = max_output_lengths(lengths, 2.0, 3)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return [h.tokens for h in sample(model, src, lengths, limits, temperature=1.5,
                                          generator=generator)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_sampled_log_probs_are_the_models():
    model = peaked_model()
    src, lengths = sources(n=4)
    limits = max_output_lengths(lengths, 2.0, 3)
    hyps = sample(model, src, lengths, limits, generator=torch.Generator().manual_seed(0))
    for i, hyp in enumerate(hyps):
        state = model.encode(src[i: i + 1], lengths[i: i + 1])
        token, total = torch.tensor([2]), 0.0
        with torch.no_grad():
            for t in hyp.tokens + [EOS_ID]:
                log_probs, state, _ = model.decode_step(token, state)
                total += float(log_probs[0, t])
                token = torch.tensor([t])
        assert hyp.log_prob == pytest.approx(total, abs=1e-4)


def test_filter_logits_top_k_and_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(search.filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(search.filter_logits(logits, top_p=0.79))  # 0.5 + 0.3 reaches it
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(search.filter_logits(logits, top_p=0.81))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(search.filter_logits(logits, top_p=0.1))  # the best always stays
    assert kept.tolist() == [[True, False, False, False]]


def assert_same_hypotheses(expected, got, abs=1e-5):
    assert [h.tokens for h in got] == [h.tokens for h in expected]
    assert [h.log_prob for h in got] == pytest.approx([h.log_prob for h in expected], abs=abs)
    assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=abs)


FAST_EQUALS_PLAIN = [({}, {}), ({"min_length": 4, "no_repeat_ngram": 2}, {}),
                     ({}, {"drop_multiple": 4}), ({"min_length": 2}, {"drop_multiple": 8})]


@pytest.mark.parametrize("cell,attention", [("gru", "bahdanau"), ("lstm", "luong"),
                                            ("rnn", "none")])
@pytest.mark.parametrize("options,fast_options", FAST_EQUALS_PLAIN)
def test_fast_greedy_and_beam_search_equal_the_plain_ones(cell, attention, options,
                                                          fast_options):
    model = peaked_model(seed=7, cell=cell, attention=attention)
    src, lengths = sources(n=19, seed=12)
    limits = max_output_lengths(lengths, 2.0, 3)
    state, first = model.encode(src, lengths), start_tokens(len(src))
    plain = search.greedy_search(model, state, first, limits, **options)
    fast = fast_search.greedy_search(model, state, first, limits, **options, **fast_options)
    assert len({len(h.tokens) for h in plain}) > 2  # ends vary
    assert_same_hypotheses(plain, fast)
    for beam_size, alpha, n_best in [(3, 1.0, 1), (4, 0.0, 4), (5, 0.6, 2)]:
        plain_beams = search.beam_search(model, state, first, limits, beam_size, alpha, n_best,
                                         **options)
        fast_beams = fast_search.beam_search(model, state, first, limits, beam_size, alpha,
                                             n_best, **options, **fast_options)
        for expected, got in zip(plain_beams, fast_beams, strict=True):
            assert len(got) == n_best
            assert_same_hypotheses(expected, got)


@pytest.mark.skipif(not functional.PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("cell,attention", [("gru", "bahdanau"), ("lstm", "luong"),
                                            ("rnn", "none")])
def test_fast_searches_with_every_step_weight_packed_equal_the_plain_ones(cell, attention,
                                                                         monkeypatch):
    """Packing (``step_linear``, ``cell_step``), here for every product at every row count."""
    monkeypatch.setattr(functional, "PACKED_MIN_OUTPUTS", 1)
    packed = []
    real = functional._packed
    monkeypatch.setattr(functional, "_packed", lambda x, w: packed.append(real(x, w)) or packed[-1])
    model = peaked_model(seed=3, cell=cell, attention=attention)
    src, lengths = sources(n=19, seed=4)
    limits = max_output_lengths(lengths, 2.0, 3)
    state, first = model.encode(src, lengths), start_tokens(len(src))
    plain = search.greedy_search(model, state, first, limits)
    plain_beams = search.beam_search(model, state, first, limits, 4, 0.6, 2)
    packed.clear()
    assert_same_hypotheses(plain, fast_search.greedy_search(model, state, first, limits))
    for expected, got in zip(plain_beams,
                             fast_search.beam_search(model, state, first, limits, 4, 0.6, 2),
                             strict=True):
        assert_same_hypotheses(expected, got)
    assert packed and all(p is not None and p.is_mkldnn for p in packed)


@pytest.mark.parametrize("options", [{"temperature": 1.5}, {"top_k": 3, "min_length": 3},
                                     {"top_p": 0.8, "temperature": 0.7}])
def test_fast_sampling_draws_what_the_plain_sampling_draws(options):
    model = peaked_model(seed=13)
    src, lengths = sources(n=17, seed=14)
    limits = max_output_lengths(lengths, 2.0, 3)
    state, first = model.encode(src, lengths), start_tokens(len(src))
    streamed = {"plain": [], "fast": []}

    def draw(module, name):
        generator = torch.Generator().manual_seed(5)
        return module.sample(model, state, first, limits, generator=generator,
                             on_step=lambda rows, tokens: streamed[name].append((rows, tokens)),
                             **options)

    plain, fast = draw(search, "plain"), draw(fast_search, "fast")
    assert len({len(h.tokens) for h in plain}) > 3
    assert_same_hypotheses(plain, fast)
    assert streamed["plain"] == streamed["fast"]  # the same rows stream the same tokens
