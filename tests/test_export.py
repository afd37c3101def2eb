"""ONNX export and the ONNX Runtime backend: the graphs compute what the PyTorch models do,
the same search code over them finds the same outputs, and every bad input is one line.

Tolerance: every graph output is within 1e-5 (absolute) of PyTorch's in float32; the
searches' and classifiers' discrete outputs (tokens, labels) are identical.
"""

from __future__ import annotations

import json
import shutil
import sys
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seq2seq import Translator
from seq2seq.classifier import class_probabilities
from seq2seq.config import (
    ClassifierConfig,
    Config,
    DecoderConfig,
    EncoderConfig,
    LanguageModelConfig,
    ModelConfig,
)
from seq2seq.data.batching import IdColumn
from seq2seq.export.backend import (
    OnnxClassificationModel,
    OnnxLanguageModel,
    OnnxTranslationModel,
)
from seq2seq.export.folder import MANIFEST_FILE, ExportFolder
from seq2seq.export.run import write_export
from seq2seq.models.classification import ClassificationModel
from seq2seq.models.language_model import LanguageModel
from seq2seq.models.translation import TranslationModel
from seq2seq.run_directory import RunDirectory, save_weights
from seq2seq.search import beam_search, greedy_search, sample, start_tokens
from seq2seq.tokenizers import EOS_ID, PAD_ID

from .cli_helpers import assert_user_error, run_cli
from .test_cli_translation import tiny_config
from .test_search import sources

ATOL = 1e-5
VOCAB = 12
NOWHERE = Path("/nonexistent")  # no tokenizer files to copy for an in-memory model


def exported(model, config: Config, directory: Path) -> ExportFolder:
    return ExportFolder(write_export(model.eval(), config, NOWHERE, directory / "export"))


def close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    assert (a is None) == (b is None)
    return a is None or (a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=ATOL))


# ---- translation ---------------------------------------------------------------------

ATTENTIONS = ["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"]
# Every cell x attention; input feeding, a bidirectional encoder and two layers vary over them.
TRANSLATION_CASES = [(cell, attention, i % 2 == 0, i % 3 != 0, 1 + i % 2)
                     for i, (cell, attention) in enumerate(product(["rnn", "gru", "lstm"],
                                                                   ATTENTIONS))]


def translation_model(cell, attention, feeding, bidirectional, layers, seed=0, bridge=True,
                      **options):
    """A tiny random translator whose distributions are peaked but varied (see test_search)."""
    torch.manual_seed(seed)
    kind, score = (attention.split("_") + ["general"])[:2]
    encoder_hidden = 8
    config = ModelConfig(
        embedding_size=8,
        encoder=EncoderConfig(cell=cell, hidden_size=encoder_hidden, layers=layers,
                              bidirectional=bidirectional, dropout=0.3),
        decoder=DecoderConfig(cell=cell, hidden_size=encoder_hidden * (1 + bidirectional),
                              layers=3 - layers if bridge else layers, attention=kind,
                              luong_score=score, input_feeding=feeding, dropout=0.3,
                              bridge=bridge,
                              attentional_output=options.pop("attentional_output", "linear")),
        embedding_dropout=0.3, output_dropout=0.3, **options)
    model = TranslationModel(config, VOCAB, VOCAB).eval()
    with torch.no_grad():
        model.output_layer.weight.mul_(3.0)
        model.output_layer.bias[EOS_ID] = 1.0
    return model, Config(task="translation", model=config)


def test_every_translation_combination_is_covered():
    assert {(c, a) for c, a, *_ in TRANSLATION_CASES} == set(product(["rnn", "gru", "lstm"],
                                                                     ATTENTIONS))
    assert {f for _, _, f, _, _ in TRANSLATION_CASES} == {True, False}
    assert {b for _, _, _, b, _ in TRANSLATION_CASES} == {True, False}
    assert {n for *_, n in TRANSLATION_CASES} == {1, 2}


# The reference model's choices the combinations above leave out.
OTHER_TRANSLATION_CASES = [
    ("gru", "bahdanau", True, True, 1, {"attentional_output": "tanh"}),
    ("lstm", "luong_general", True, False, 2, {"bridge": False}),
    ("gru", "luong_dot", False, False, 1, {"share_embeddings": True, "tie_embeddings": True}),
]


@pytest.mark.parametrize("cell,attention,feeding,bidirectional,layers,options",
                         [(*case, {}) for case in TRANSLATION_CASES] + OTHER_TRANSLATION_CASES)
def test_translation_graphs_and_searches_equal_pytorch(tmp_path, cell, attention, feeding,
                                                       bidirectional, layers, options):
    model, config = translation_model(cell, attention, feeding, bidirectional, layers,
                                      **options)
    onnx = OnnxTranslationModel(exported(model, config, tmp_path))
    src, lengths = sources(n=12)
    with torch.no_grad():
        expected, found = model.encode(src, lengths), onnx.encode(src, lengths)
        assert expected.named().keys() == found.named().keys()
        for name, tensor in expected.named().items():
            assert close(tensor, found.named()[name]), name
        tokens = start_tokens(len(src))
        for _ in range(4):  # a few steps, each from its own state
            log_probs, expected, weights = model.decode_step(tokens, expected)
            onnx_log_probs, found, onnx_weights = onnx.decode_step(tokens, found)
            assert close(log_probs, onnx_log_probs)
            assert close(weights, onnx_weights)
            for name in ("hidden", "cell", "feed"):
                assert close(getattr(expected, name), getattr(found, name)), name
            tokens = log_probs.argmax(-1)
    limits = lengths + 4

    def tokens_of(search, m, *options):
        hypotheses = search(m, m.encode(src, lengths), start_tokens(len(src)), limits, *options)
        return [h[0].tokens if isinstance(h, list) else h.tokens for h in hypotheses]

    assert tokens_of(greedy_search, onnx) == tokens_of(greedy_search, model)
    assert tokens_of(beam_search, onnx, 5) == tokens_of(beam_search, model, 5)


def test_a_batch_and_source_length_unlike_the_traced_example(tmp_path):
    """Dynamic axes: one sentence, and a source far longer than the export's example."""
    model, config = translation_model("lstm", "bahdanau", True, True, 2)
    onnx = OnnxTranslationModel(exported(model, config, tmp_path))
    for n, length in ((1, 3), (3, 30)):
        src = torch.randint(4, VOCAB, (n, length))
        src[:, -1] = EOS_ID
        lengths = torch.full((n,), length)
        lengths[0] = max(1, length - 2)
        src[0, lengths[0] - 1], src[0, lengths[0]:] = EOS_ID, PAD_ID
        with torch.no_grad():
            assert close(model.encode(src, lengths).named()["memory"],
                         onnx.encode(src, lengths).named()["memory"])


# ---- classification ------------------------------------------------------------------

@pytest.mark.parametrize("cell,pooling,bidirectional,layers,mlp", [
    ("rnn", "last", True, 2, 0), ("gru", "mean", False, 1, 8), ("lstm", "max", True, 1, 0),
    ("lstm", "attention", False, 2, 8), ("gru", "last", False, 1, 0)])
def test_classifier_graph_equals_pytorch(tmp_path, cell, pooling, bidirectional, layers, mlp):
    torch.manual_seed(0)
    config = ModelConfig(
        embedding_size=8, embedding_dropout=0.3,
        encoder=EncoderConfig(cell=cell, hidden_size=8, layers=layers,
                              bidirectional=bidirectional, dropout=0.3),
        classifier=ClassifierConfig(pooling=pooling, hidden_size=mlp, dropout=0.3))
    model = ClassificationModel(config, VOCAB, 3).eval()
    with torch.no_grad():
        model.classifier[-1].weight.mul_(4.0)  # confident, varied predictions
    onnx = OnnxClassificationModel(exported(model, Config(task="classification", model=config),
                                            tmp_path))
    g = torch.Generator().manual_seed(2)
    ids = IdColumn.from_lists([torch.randint(4, VOCAB, (int(n),), generator=g).tolist()
                               for n in torch.randint(1, 12, (40,), generator=g)])
    expected = class_probabilities(model, ids, torch.device("cpu"), batch_size=16)
    found = class_probabilities(onnx, ids, torch.device("cpu"), batch_size=16)
    np.testing.assert_allclose(found, expected, atol=ATOL)
    assert (found.argmax(1) == expected.argmax(1)).all()
    assert np.ptp(expected, axis=0).max() > 0.01  # texts get different probabilities


# ---- language model ------------------------------------------------------------------

@pytest.mark.parametrize("cell,layers,condition", [
    ("rnn", 2, None), ("gru", 1, None), ("lstm", 2, None), ("lstm", 1, ("label", "both")),
    ("gru", 2, ("features", "input")), ("rnn", 1, ("label", "init"))])
def test_language_model_graphs_and_sampling_equal_pytorch(tmp_path, cell, layers, condition):
    torch.manual_seed(0)
    kind, mode = condition or ("label", "init")
    config = ModelConfig(
        embedding_size=8, embedding_dropout=0.3, output_dropout=0.3,
        encoder=EncoderConfig(cell=cell, hidden_size=16, layers=layers, bidirectional=False,
                              dropout=0.3),
        language_model=LanguageModelConfig(condition_type=kind, condition_mode=mode,
                                           condition_size=6))
    inputs = 0 if condition is None else (3 if kind == "label" else 4)
    model = LanguageModel(config, VOCAB, inputs).eval()
    with torch.no_grad():
        model.output_layer.weight.mul_(3.0)
    onnx = OnnxLanguageModel(exported(model, Config(task="language_model", model=config),
                                      tmp_path))
    batch = 3
    if condition is None:
        given = None
    elif kind == "label":
        given = torch.tensor([0, 2, 1])
    else:
        given = torch.randn(batch, 4)
    prompt = torch.randint(3, VOCAB, (batch, 5))
    with torch.no_grad():
        expected_state = model.initial_state(batch, given)
        found_state = onnx.initial_state(batch, given)
        for name in ("hidden", "cell", "condition"):
            assert close(getattr(expected_state, name), getattr(found_state, name)), name
        features, expected_state = model(prompt, expected_state)
        logits, found_state = onnx(prompt, found_state)
        assert close(model.logits(features), onnx.logits(logits))
        assert close(expected_state.hidden, found_state.hidden)
        log_probs, _, _ = model.decode_step(prompt[:, -1], expected_state)
        onnx_log_probs, _, _ = onnx.decode_step(prompt[:, -1], found_state)
        assert close(log_probs, onnx_log_probs)

    def draw(m, state):
        generator = torch.Generator().manual_seed(7)
        limits = torch.full((batch,), 12)
        return [h.tokens for h in sample(m, state, prompt[:, -1], limits, 0.9, 0, 0.95,
                                         generator=generator)]

    assert draw(onnx, found_state) == draw(model, expected_state)


# ---- the command line on trained runs --------------------------------------------------

@pytest.fixture(scope="module")
def translation_run(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("export_translation")
    config = tiny_config(directory)
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["training"].update(max_steps=4, validate_every=4)
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run = directory / "run"
    result = run_cli("train", config, "--run-dir", run, "-q")
    assert result.exit_code == 0, result.output
    # A few steps teach it little: larger embeddings and a random output layer make its
    # translations differ from sentence to sentence (and from beam to greedy).
    translator = Translator.from_pretrained(run, device="cpu")
    model = translator.model
    torch.manual_seed(0)
    with torch.no_grad():
        model.src_embed.weight.mul_(5.0)
        model.trg_embed.weight.mul_(5.0)
        model.output_layer.weight.normal_(0.0, 1.0)
        model.output_layer.bias.zero_()
        model.output_layer.bias[EOS_ID] = -2.0  # beam search would favour short outputs
    save_weights(model, run / "model.safetensors")
    return run


@pytest.fixture(scope="module")
def translation_export(translation_run, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("exports") / "translation"
    result = run_cli("export", translation_run, "--format", "onnx", "--output", output)
    assert result.exit_code == 0, result.output
    return output


def test_export_folder_is_self_contained(translation_export):
    names = {p.name for p in translation_export.iterdir()}
    assert {"manifest.json", "README.md", "config.yaml", "encoder.onnx", "decoder_step.onnx",
            "joint.json"} <= names
    manifest = json.loads((translation_export / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["head"] == "translation" and manifest["format_version"] == 1
    assert manifest["special_tokens"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert manifest["decoding"]["beam_size"] == 2
    step = manifest["graphs"]["decoder_step"]
    assert [t["name"] for t in step["inputs"]] == ["tokens", "hidden", "feed", "memory", "keys",
                                                   "mask"]
    assert "decoder_step.onnx" in (translation_export / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("beam", ["1", "5"])
def test_translate_and_evaluate_an_export_as_the_run(translation_run, translation_export,
                                                     tmp_path, beam):
    lines = "1 2 3\n4 5\n9 8 7 6\n\n0\n7 7 1 2 3\n5 5 5\n8 1\n"
    from_run = run_cli("translate", translation_run, "--beam-size", beam, input=lines)
    from_export = run_cli("translate", translation_export, "--beam-size", beam, input=lines)
    assert from_run.exit_code == 0 and from_export.exit_code == 0, from_export.output
    assert from_export.stdout == from_run.stdout
    assert len(set(from_run.stdout.splitlines())) >= 3  # varied translations were compared
    test = translation_run.parent / "test.tsv"
    rows = [line.split("\t") for line in test.read_text(encoding="utf-8").splitlines()[1:]]
    (tmp_path / "src.txt").write_text("".join(r[0] + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(r[1] + "\n" for r in rows), encoding="utf-8")
    scores = []
    for where in (translation_run, translation_export):
        result = run_cli("evaluate", where, "--src", tmp_path / "src.txt", "--ref",
                         tmp_path / "ref.txt", "--beam-size", beam,
                         "--output-dir", tmp_path / where.name)
        assert result.exit_code == 0, result.output
        scores.append(json.loads((tmp_path / where.name / "metrics.json").read_text())["bleu"])
    assert scores[0] == scores[1]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_written_is_named(translation_run):
    # /proc accepts no new folders, even from root: the error names --output, not a temporary
    assert_user_error(run_cli("export", translation_run, "--output", "/proc/seq2seq_out"),
                      "/proc/seq2seq_out: cannot write a folder there")


def test_export_refuses_an_existing_folder_without_overwrite(translation_run, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "mine.txt").write_text("keep me", encoding="utf-8")
    assert_user_error(run_cli("export", translation_run, "--output", output), "already exists",
                      "--overwrite")
    assert_user_error(run_cli("export", translation_run, "--output", output, "--overwrite"),
                      "not an export folder")
    assert (output / "mine.txt").read_text(encoding="utf-8") == "keep me"
    earlier = tmp_path / "earlier"
    assert run_cli("export", translation_run, "--output", earlier).exit_code == 0
    (earlier / "stale.onnx").write_bytes(b"old")
    (earlier / "eval").mkdir()  # what `seq2seq evaluate` writes into an export
    (earlier / "deploy-notes.txt").write_text("mine", encoding="utf-8")
    assert_user_error(run_cli("export", translation_run, "--output", earlier, "--overwrite"),
                      "did not write", "deploy-notes.txt")
    assert (earlier / "deploy-notes.txt").exists() and (earlier / "stale.onnx").exists()
    (earlier / "deploy-notes.txt").unlink()
    (earlier / "eval" / "test").mkdir()
    (earlier / "eval" / "test" / "metrics.json").write_text("{}", encoding="utf-8")  # its own
    (earlier / "eval" / "test" / "gold.tsv").write_text("mine", encoding="utf-8")
    assert_user_error(run_cli("export", translation_run, "--output", earlier, "--overwrite"),
                      "eval/test/gold.tsv")
    (earlier / "eval" / "test" / "gold.tsv").unlink()
    result = run_cli("export", translation_run, "--output", earlier, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (earlier / "stale.onnx").exists() and not (earlier / "eval").exists()


def test_export_refuses_a_run_without_a_model_or_still_training(translation_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(translation_run, unfinished)
    lock = RunDirectory(unfinished).lock()  # as a training process holds it
    try:
        assert_user_error(run_cli("export", unfinished, "--output", tmp_path / "a"),
                          "not finished", "train.lock")
    finally:
        lock.release()
    (unfinished / "model.safetensors").unlink()
    assert_user_error(run_cli("export", unfinished, "--output", tmp_path / "b"),
                      "model.safetensors")
    assert_user_error(run_cli("export", tmp_path / "nothing", "--output", tmp_path / "c"),
                      "not found")
    assert_user_error(run_cli("export", translation_run, "--output", tmp_path / "d",
                              "--format", "tflite"), "--format")
    assert not any((tmp_path / n).exists() for n in "abcd")


@pytest.mark.parametrize("damage,words", [
    ("missing_graph", ["decoder_step.onnx", "missing"]),
    ("corrupt_graph", ["encoder.onnx", "not a readable ONNX graph"]),
    ("corrupt_manifest", ["manifest.json", "not valid JSON"]),
    ("missing_manifest", ["manifest.json", "missing"]),
    ("wrong_version", ["manifest.json", "version"]),
    ("swapped_graphs", ["encoder.onnx", "not those the manifest names"]),
])
def test_a_damaged_export_is_a_one_line_error(translation_export, tmp_path, damage, words):
    broken = tmp_path / "broken"
    shutil.copytree(translation_export, broken)
    if damage == "missing_graph":
        (broken / "decoder_step.onnx").unlink()
    elif damage == "corrupt_graph":
        data = (broken / "encoder.onnx").read_bytes()
        (broken / "encoder.onnx").write_bytes(data[: len(data) // 3])
    elif damage == "corrupt_manifest":
        (broken / MANIFEST_FILE).write_text('{"format": "seq2seq-onnx",', encoding="utf-8")
    elif damage == "missing_manifest":
        (broken / MANIFEST_FILE).unlink()
    elif damage == "swapped_graphs":
        (broken / "encoder.onnx").replace(broken / "swap")
        (broken / "decoder_step.onnx").replace(broken / "encoder.onnx")
        (broken / "swap").replace(broken / "decoder_step.onnx")
    else:
        manifest = json.loads((broken / MANIFEST_FILE).read_text(encoding="utf-8"))
        manifest["format_version"] = 99
        (broken / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    assert_user_error(run_cli("translate", broken, "1 2"), *words)


def test_without_onnx_packages_the_error_says_what_to_install(translation_export,
                                                              translation_run, tmp_path,
                                                              monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert_user_error(run_cli("translate", translation_export, "1 2"), "onnxruntime",
                      "seq2seq[onnx]")
    assert_user_error(run_cli("export", translation_run, "--output", tmp_path / "e"), "onnx",
                      "seq2seq[onnx]")


def test_options_that_do_not_apply_to_an_export(translation_export, translation_run):
    assert_user_error(run_cli("translate", translation_export, "1 2", "--checkpoint",
                              translation_run / "model.safetensors"), "--checkpoint")
    assert_user_error(run_cli("classify", translation_export, "1 2"), "translation",
                      "not a classification")
    assert_user_error(run_cli("translate", translation_export, "1 2", "--device", "cuda:0"),
                      "--device")
    assert_user_error(run_cli("evaluate", translation_export, "--report", "r"), "--report",
                      "ONNX export")
    assert_user_error(run_cli("diagnose", translation_export), "diagnose", "ONNX export")
    assert_user_error(run_cli("report", translation_export), "report", "ONNX export")


# ---- classifier and language model end to end -------------------------------------------

def test_classify_an_export_as_the_run(tmp_path):
    from .test_classification import synthetic_raw, train

    run = tmp_path / "run"
    train(synthetic_raw(tmp_path, cell="lstm", pooling="attention", max_steps=20,
                        validate_every=20), run)
    assert run_cli("export", run, "--output", tmp_path / "export").exit_code == 0
    assert (tmp_path / "export" / "labels.json").is_file()
    texts = "good fine great\nbad awful\n\nsomething else entirely\n"
    from_run = run_cli("classify", run, "--top-k", "2", input=texts)
    from_export = run_cli("classify", tmp_path / "export", "--top-k", "2", input=texts)
    assert from_run.exit_code == 0 and from_export.exit_code == 0, from_export.output
    assert from_export.stdout == from_run.stdout
    assert len(set(from_run.stdout.splitlines())) >= 3
    scores = [run_cli("evaluate", where, "--output-dir", tmp_path / "eval" / where.name)
              for where in (run, tmp_path / "export")]
    assert all(s.exit_code == 0 for s in scores), scores[1].output
    found = [json.loads((tmp_path / "eval" / w / "metrics.json").read_text(encoding="utf-8"))
             for w in ("run", "export")]
    assert found[0]["accuracy"] == found[1]["accuracy"]
    assert found[0]["confusion_matrix"] == found[1]["confusion_matrix"]


def test_generate_from_an_export_as_the_run(tmp_path):
    from .test_language_model import PANGRAM, stream_config, train

    (tmp_path / "train.txt").write_text(PANGRAM * 20, encoding="utf-8")
    run = tmp_path / "run"
    train(stream_config(tmp_path / "train.txt", steps=10, cell="gru"), run)
    assert run_cli("export", run, "--output", tmp_path / "export").exit_code == 0
    for options in (["--seed", "3", "--num-samples", "2", "--format", "jsonl"],
                    ["--greedy"], ["--beam-size", "3", "--num-samples", "2"]):
        from_run = run_cli("generate", run, "--prompt", "pack", "--max-tokens", "20", *options)
        from_export = run_cli("generate", tmp_path / "export", "--prompt", "pack",
                              "--max-tokens", "20", *options)
        assert from_run.exit_code == 0 and from_export.exit_code == 0, from_export.output
        if "jsonl" in options:  # log-probabilities may differ in the last digits
            for a, b in zip(from_run.stdout.splitlines(), from_export.stdout.splitlines()):
                a, b = json.loads(a), json.loads(b)
                assert a.pop("log_prob") == pytest.approx(b.pop("log_prob"), abs=1e-3)
                assert a == b
        else:
            assert from_export.stdout == from_run.stdout
    scores = [run_cli("evaluate", where, "--output-dir", tmp_path / "eval" / where.name)
              for where in (run, tmp_path / "export")]
    assert all(s.exit_code == 0 for s in scores), scores[1].output
    found = [json.loads((tmp_path / "eval" / w / "metrics.json").read_text(encoding="utf-8"))
             for w in ("run", "export")]
    assert found[1]["ppl"] == pytest.approx(found[0]["ppl"], rel=1e-4)
    assert found[1]["tokens"] == found[0]["tokens"]


def test_the_documented_greedy_loop_translates_as_seq2seq(translation_run, translation_export):
    """docs/export.md's onnxruntime-only loop gives what `seq2seq translate --beam-size 1` does."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text(encoding="utf-8")
    block = text.split("```python\n")[1].split("```")[0]
    assert "import torch" not in block and "import seq2seq" not in block
    namespace: dict = {}
    exec(compile(block, "docs/export.md", "exec"), namespace)
    sentences = ["1 2 3", "4 5", "9 8 7 6", "0", "7 7 1 2 3", "5 5 5", "8 1"]
    expected = run_cli("translate", translation_run, "--beam-size", "1", *sentences)
    assert expected.exit_code == 0, expected.output
    found = namespace["greedy_translate"](translation_export, sentences)
    assert found == expected.stdout.splitlines()
    assert len(set(found)) >= 3


@pytest.mark.parametrize("condition_type,mode", [("label", "both"), ("features", "input")])
def test_a_conditioned_language_model_export_generates_as_the_run(tmp_path, condition_type,
                                                                  mode):
    from .test_language_model import conditioned_config, train, write_conditioned

    features = condition_type == "features"
    write_conditioned(tmp_path / "train.tsv", features)
    raw = conditioned_config(tmp_path / "train.tsv", condition_type, mode)
    raw["training"].update(max_steps=10, validate_every=10)
    run = tmp_path / "run"
    train(raw, run)
    assert run_cli("export", run, "--output", tmp_path / "export").exit_code == 0
    assert (tmp_path / "export" / "initial_state.onnx").is_file()
    assert (tmp_path / "export" / "conditions.json").is_file()
    for condition in (["1 0", "0 1"] if features else ["up", "down"]):
        for options in (["--seed", "5"], ["--beam-size", "3"]):
            results = [run_cli("generate", where, "--condition", condition, "--max-tokens", "8",
                               *options) for where in (run, tmp_path / "export")]
            assert all(r.exit_code == 0 for r in results), results[1].output
            assert results[1].stdout == results[0].stdout
    assert_user_error(run_cli("generate", tmp_path / "export"), "--condition")


def test_a_served_export_answers_as_the_run_and_refuses_attention_by_field(translation_run,
                                                                          translation_export):
    import httpx

    from seq2seq.serving.app import create_app
    from seq2seq.serving.models import load_model

    from .test_serve import LIMITS, ServerThread

    models = {name: load_model(name, path, LIMITS, "cpu", budget=4096, max_wait=0.002, workers=1)
              for name, path in [("run", translation_run), ("export", translation_export)]}
    server = ServerThread(create_app(models, LIMITS))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            body = {"texts": ["1 2 3", "9 8 7 6"], "beam_size": 3, "n_best": 2}
            answers = [client.post("/v1/translate", json={**body, "model": name})
                       for name in ("run", "export")]
            assert [a.status_code for a in answers] == [200, 200], answers[1].text
            texts = [[[h["text"] for h in row["n_best"]] for row in a.json()["translations"]]
                     for a in answers]
            assert texts[0] == texts[1]
            listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
            assert listed["export"]["attention"] is False
            refused = client.post("/v1/translate", json={**body, "model": "export",
                                                         "attention": True})
            assert refused.status_code == 422, refused.text
            assert refused.json()["field"] == "attention"
            assert refused.json()["error"].startswith("attention: ")
    finally:
        server.stop()
