"""Config files become typed objects; every mistake names its key."""

import pytest
import torch

from seq2seq.config import Config, check_settings_used, config_from_dict, dump_config, load_config
from seq2seq.errors import UserError


def test_demo_config_loads_and_round_trips(tmp_path):
    config = load_config("configs/demo_es_en.yaml")
    assert config.model.encoder.cell == "gru" and config.model.decoder.attention == "bahdanau"
    path = tmp_path / "again.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_demo_config_trains_a_fixed_amount_of_work_in_float32():
    # `make demo` should give every machine the same model: a step budget (not a time budget,
    # which follows the machine's speed and load) and float32 (bfloat16 differs between CPUs).
    config = load_config("configs/demo_es_en.yaml")
    assert config.training.max_steps > 0 and config.training.max_minutes == 0
    assert config.training.cpu_amp is False and config.decoding.amp is False
    assert config.training.num_threads == 2  # not 0, which follows the machine's load


@pytest.mark.parametrize("raw,words", [
    ({"model": {"hiden_size": 3}}, ["model.hiden_size", "valid:", "encoder"]),
    ({"modle": {}}, ["modle", "top level", "model"]),
    ({"model": {"encoder": {"cell": "transformer"}}}, ["model.encoder.cell", "rnn, gru, lstm"]),
    ({"model": {"encoder": {"hidden_size": "big"}}}, ["model.encoder.hidden_size", "integer"]),
    ({"training": {"learning_rate": "fast"}}, ["training.learning_rate", "number"]),
    ({"training": {"adam_betas": [0.9]}}, ["training.adam_betas", "2 values"]),
    ({"model": {"share_embeddings": True}, "tokenizer": {"joint": False}}, ["share_embeddings", "joint"]),
    ({"model": {"decoder": {"attention": "luong", "luong_score": "dot", "hidden_size": 100}}},
     ["luong_score: dot", "512", "100"]),
    ({"decoding": {"n_best": 9, "beam_size": 2}}, ["decoding.n_best"]),
    ({"model": "big"}, ["model must be a mapping"]),
    ({"training": {"cpu_amp": "sometimes"}}, ["training.cpu_amp", "true/false or 'auto'"]),
])
def test_mistakes_name_the_key(raw, words):
    with pytest.raises(UserError) as err:
        config_from_dict(raw, source="x.yaml")
    message = str(err.value)
    assert message.startswith("x.yaml: ") and "\n" not in message
    for word in words:
        assert word in message


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder:\n    hidden_size: 8\n")
    config = load_config(path, ["model.encoder.hidden_size=16", "training.learning_rate=1e-4",
                                "evaluation.metrics=[bleu]"])
    assert config.model.encoder.hidden_size == 16
    assert config.training.learning_rate == pytest.approx(1e-4)
    assert config.evaluation.metrics == ("bleu",)
    with pytest.raises(UserError, match="KEY=VALUE"):
        load_config(path, ["model.encoder.hidden_size"])
    with pytest.raises(UserError, match="model.encoder.size"):
        load_config(path, ["model.encoder.size=3"])


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml line"):
        load_config(bad)


def test_mixed_precision_switches_take_true_false_or_auto(tmp_path, monkeypatch):
    from seq2seq import runtime

    path = tmp_path / "c.yaml"
    path.write_text("training:\n  cpu_amp: auto\ndecoding:\n  amp: true\n")
    config = load_config(path, ["training.amp=false"])
    assert (config.training.cpu_amp, config.decoding.amp, config.training.amp) == ("auto", True, False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    model = torch.nn.Linear(4, 4)
    for setting, device, enabled in ((True, cpu, True), (False, cuda, False), (True, cuda, True),
                                     ("auto", cuda, True)):  # float16 on CUDA is fast
        assert _resolve_without_probe(setting, device, model).enabled is enabled
    with pytest.raises(TypeError, match="resolve 'auto'"):
        runtime.mixed_precision(cpu, "auto")


def _resolve_without_probe(setting, device, model):
    from seq2seq.precision import resolve_mixed_precision

    def never(products, training):
        raise AssertionError("explicit switches and CUDA are not measured")

    return resolve_mixed_precision(setting, device, model, training=True, rows=8, measure=never)


def test_defaults_are_valid():
    config_from_dict({})
    assert Config().decoding.beam_size == 5


@pytest.mark.parametrize("task,setting,words", [
    ("translation", {"data": {"max_length": 10}}, ["data.max_length", "classification and"]),
    ("translation", {"model": {"classifier": {"pooling": "mean"}}}, ["model.classifier"]),
    ("translation", {"generation": {"temperature": 0.5}}, ["generation", "language_model"]),
    ("classification", {"decoding": {"beam_size": 3}}, ["decoding", "translation"]),
    ("classification", {"data": {"src": "es"}}, ["data.src", "translation"]),
    ("language_model", {"training": {"class_weights": "balanced"}}, ["training.class_weights"]),
])
def test_a_setting_only_another_head_reads_is_refused_not_ignored(task, setting, words):
    base = {"task": task, "model": {"encoder": {"bidirectional": task != "language_model"}}}
    check_settings_used(config_from_dict(base))  # the defaults of every other head
    with pytest.raises(UserError) as caught:
        check_settings_used(config_from_dict({**base, **setting}), "my.yaml")
    assert all(word in str(caught.value) for word in ["my.yaml", *words]), str(caught.value)
