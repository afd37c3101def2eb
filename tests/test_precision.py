"""``auto`` mixed precision: decided by timing the model's products, cached per machine."""

import io
import json

import pytest
import torch
from torch import nn

from seq2seq import precision
from seq2seq.config import config_from_dict
from seq2seq.models import functional
from seq2seq.models.translation import TranslationModel
from seq2seq.precision import (
    Float32Measurement,
    Measurement,
    resolve_float32_products,
    resolve_mixed_precision,
)

CPU = torch.device("cpu")


class Counted:
    """A stand-in probe that returns fixed figures and counts its calls."""

    def __init__(self, float32: float, bfloat16: float) -> None:
        self.figures = Measurement(float32, bfloat16, 0.5)
        self.calls = 0

    def __call__(self, products, training):
        self.calls += 1
        return self.figures


@pytest.fixture(autouse=True)
def fresh(tmp_path, monkeypatch):
    """Each test: its own cache directory, nothing decided yet in this process, and a CPU
    with bfloat16 hardware (so ``auto`` measures rather than skipping)."""
    monkeypatch.setenv("SEQ2SEQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_decided", {})
    monkeypatch.setattr(precision, "cpu_bf16_hardware", lambda: True)


def small_model() -> nn.Module:
    return nn.Sequential(nn.GRU(8, 16), nn.Linear(16, 30))


def resolve(measure, model=None, training=True, rows=8):
    return resolve_mixed_precision("auto", CPU, model or small_model(), training=training,
                                   rows=rows, measure=measure)


def test_faster_bfloat16_is_chosen_and_the_line_gives_both_figures():
    choice = resolve(Counted(float32=22.0, bfloat16=41.0))
    assert (choice.enabled, choice.name, choice.auto) == (True, "bfloat16", True)
    assert "41.0 vs 22.0 GFLOP/s" in choice.line and "1.86x" in choice.line
    assert choice.line.startswith("precision auto for training: bfloat16")


@pytest.mark.parametrize("bfloat16", [16.0, 22.0, 23.9])  # slower, equal, within the margin
def test_slower_or_barely_faster_bfloat16_stays_float32(bfloat16):
    choice = resolve(Counted(float32=22.0, bfloat16=bfloat16))
    assert (choice.enabled, choice.name) == (False, "float32")
    assert f"{bfloat16:.1f} vs 22.0 GFLOP/s" in choice.line
    assert precision.prefers_bfloat16(22.0, 24.3) and not precision.prefers_bfloat16(22.0, 24.1)


def test_a_measurement_is_cached_and_reused_without_measuring_again(tmp_path, monkeypatch):
    probe = Counted(float32=20.0, bfloat16=40.0)
    first = resolve(probe)
    assert resolve(probe) is first  # the same process: decided once
    monkeypatch.setattr(precision, "_decided", {})  # a new process reads the cache file
    again = resolve(probe)
    assert probe.calls == 1
    assert again.enabled and again.cached and "cached in" in again.line
    assert "40.0 vs 20.0 GFLOP/s" in again.line
    [path] = (tmp_path / "cache").glob("precision-*.json")
    entry = json.loads(path.read_text())
    assert entry["key"]["threads"] == torch.get_num_threads()
    assert (entry["float32_gflops"], entry["bfloat16_gflops"]) == (20.0, 40.0)


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 1}', "",
                                     '{"version": 1, "key": null}'])
def test_a_corrupt_cache_file_is_measured_again_and_replaced(tmp_path, monkeypatch, content):
    probe = Counted(float32=20.0, bfloat16=40.0)
    resolve(probe)
    [path] = (tmp_path / "cache").glob("precision-*.json")
    path.write_text(content)
    monkeypatch.setattr(precision, "_decided", {})
    assert resolve(probe).enabled and probe.calls == 2
    assert json.loads(path.read_text())["bfloat16_gflops"] == 40.0
    # a stored entry for another key (the same file name, say after a hash collision) too
    entry = json.loads(path.read_text())
    entry["key"]["cpu"] = "another CPU"
    path.write_text(json.dumps(entry))
    monkeypatch.setattr(precision, "_decided", {})
    resolve(probe)
    assert probe.calls == 3


def test_an_unwritable_or_unreadable_cache_is_no_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("SEQ2SEQ_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    probe = Counted(float32=20.0, bfloat16=40.0)
    assert resolve(probe).enabled
    monkeypatch.setattr(precision, "_decided", {})
    assert resolve(probe).enabled and probe.calls == 2


def test_the_cache_key_changes_with_shapes_threads_and_mode():
    products = precision.model_products(small_model(), rows=8)
    key = precision.cache_key(products, training=True, threads=2)
    assert set(key) == {"cpu", "torch", "threads", "mode", "shapes", "question", "float32"}
    others = [precision.cache_key(products, training=True, threads=4),
              precision.cache_key(products, training=True, threads=2, onednn=True),
              precision.cache_key(products, True, 2, question="float32 products"),
              precision.cache_key(products, training=False, threads=2),
              precision.cache_key(precision.model_products(small_model(), rows=16), True, 2),
              precision.cache_key(products[:-1], training=True, threads=2)]
    paths = {precision.cache_path(k) for k in [key, *others]}
    assert len(paths) == 7
    assert precision.cache_key(list(reversed(products)), True, 2) == key


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SEQ2SEQ_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert precision.cache_dir() == tmp_path / "xdg" / "seq2seq"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert precision.cache_dir() == tmp_path / "home" / ".cache" / "seq2seq"


def test_cuda_is_float16_and_explicit_switches_are_kept_without_a_probe():
    probe = Counted(float32=20.0, bfloat16=40.0)
    cuda = resolve_mixed_precision("auto", torch.device("cuda"), small_model(), training=True,
                                   rows=8, measure=probe)
    assert (cuda.enabled, cuda.name) == (True, "float16")
    for setting in (True, False):
        choice = resolve_mixed_precision(setting, CPU, small_model(), training=False, rows=8,
                                         measure=probe)
        assert choice.enabled is setting and not choice.auto
    assert probe.calls == 0


def test_a_cpu_without_bfloat16_hardware_is_float32_without_a_probe(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_hardware", lambda: False)
    probe = Counted(float32=20.0, bfloat16=40.0)  # the flag alone never turns bfloat16 on
    choice = resolve(probe)
    assert (choice.enabled, choice.name, probe.calls) == (False, "float32", 0)
    assert "no bfloat16 hardware" in choice.line


def test_the_products_are_the_models_own_shapes():
    raw = {"model": {"embedding_size": 32, "encoder": {"hidden_size": 64, "bidirectional": True},
                     "decoder": {"hidden_size": 128, "attention": "bahdanau",
                                 "input_feeding": True}}}
    model = TranslationModel(config_from_dict(raw).model, 50, 70)
    products = precision.model_products(model, rows=12)
    assert all(m == 12 for m, _, _ in products)
    shapes = {(k, n) for _, k, n in products}
    assert (128, 70) in shapes  # the output layer over the target vocabulary
    assert (64, 3 * 64) in shapes and (32, 3 * 64) in shapes  # encoder GRU: hidden, input
    assert (32 + 128, 3 * 128) in shapes and (128, 3 * 128) in shapes  # decoder GRU
    assert (128 + 128, 128) in shapes  # the attentional layer W [h; c]
    assert not any(n == 1 for _, _, n in products)  # attention energies run in float32
    assert precision.probe_rows(64) == 64 and precision.probe_rows(64, beams=5) == 320
    assert precision.probe_rows(64, batch_tokens=1000) == 40


def test_the_trainer_resolves_auto_once_and_records_the_precision(tmp_path, monkeypatch):
    from rich.console import Console

    from tests.test_training import reversal_config, train

    probe = Counted(float32=20.0, bfloat16=40.0)
    monkeypatch.setattr(precision, "measure_products", probe)
    raw = reversal_config(tmp_path, max_len=4, max_steps=10, validate_every=5, log_every=5,
                          cpu_amp="auto")
    raw["decoding"]["amp"] = "auto"
    printed = Console(record=True, width=300, file=io.StringIO())
    monkeypatch.setattr("tests.test_training.QUIET", printed)
    train(raw, tmp_path / "run")
    assert probe.calls == 2  # training (forward + backward) and validation's decoding
    text = printed.export_text()
    assert "precision auto for training: bfloat16 (2.00x float32: 40.0 vs 20.0" in text
    assert text.count("precision auto for decoding: bfloat16") == 1  # at the first validation
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert {r["precision"] for r in rows if r["type"] == "train"} == {"bfloat16"}


def test_the_real_probe_on_a_tiny_model_decides_and_writes_the_cache(tmp_path, monkeypatch):
    """Only that it runs and decides: its figures depend on the machine and its load."""
    monkeypatch.setattr(precision, "PROBE_SECONDS", 0.1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more, and waits less for cores
    try:
        for training in (True, False):
            choice = resolve(None, training=training)
            m = choice.measurement
            assert choice.name in ("bfloat16", "float32") and not choice.cached
            assert m.float32 > 0 and m.bfloat16 > 0 and m.seconds > 0
            assert choice.enabled == precision.prefers_bfloat16(m.float32, m.bfloat16)
    finally:
        torch.set_num_threads(threads)
    assert len(list((tmp_path / "cache").glob("precision-*.json"))) == 2


class CountedFloat32:
    """A stand-in float32 probe: fixed GFLOP/s for ATen's and oneDNN's products."""

    def __init__(self, aten: float, onednn: float) -> None:
        self.figures = Float32Measurement(aten, onednn, 0.3)
        self.calls = 0

    def __call__(self, products, training):
        self.calls += 1
        return self.figures


@pytest.mark.skipif(not functional.PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("onednn,chosen", [(50.0, True), (22.0, False), (24.1, False)])
def test_float32_products_run_in_onednn_only_where_measured_faster(tmp_path, monkeypatch,
                                                                   onednn, chosen):
    probe = CountedFloat32(aten=22.0, onednn=onednn)
    choice = resolve_float32_products("auto", CPU, small_model(), training=True, rows=8, measure=probe)
    assert choice.onednn is chosen and not choice.cached
    assert choice.line.startswith("float32 products for training: " +
                                  ("oneDNN's" if chosen else "ATen's"))
    assert f"{onednn:.1f} vs 22.0 GFLOP/s" in choice.line
    monkeypatch.setattr(precision, "_decided", {})  # a new process reads the cache file
    again = resolve_float32_products("auto", CPU, small_model(), training=True, rows=8, measure=probe)
    assert (again.onednn, again.cached, probe.calls) == (chosen, True, 1)
    [path] = (tmp_path / "cache").glob("products-*.json")
    assert json.loads(path.read_text())["onednn_gflops"] == onednn
    cuda = resolve_float32_products("auto", torch.device("cuda"), small_model(), training=True,
                                    rows=8, measure=probe)
    assert not cuda.onednn and probe.calls == 1
    for setting in (True, False):  # an explicit switch is kept without a probe
        kept = resolve_float32_products(setting, CPU, small_model(), training=True, rows=8,
                                        measure=probe)
        assert kept.onednn is setting and "not auto" in kept.line and probe.calls == 1


def test_auto_weighs_bfloat16_against_the_float32_products_in_force(monkeypatch):
    seen = []

    def probe(products, training):
        seen.append(functional.onednn_products_enabled())
        return Measurement(20.0, 40.0, 0.5)

    for onednn in (False, True):
        resolve_mixed_precision("auto", CPU, small_model(), training=True, rows=8,
                                onednn=onednn, measure=probe)
    assert seen == [False, functional.PACKING_AVAILABLE]  # two keys: measured for each


@pytest.mark.skipif(not functional.PACKING_AVAILABLE, reason="this torch build has no oneDNN")
@pytest.mark.parametrize("onednn", [3.0, 0.5])
def test_the_trainer_runs_its_steps_in_the_float32_products_measured_faster(
        tmp_path, monkeypatch, onednn):
    from rich.console import Console

    from tests.test_training import reversal_config, train

    monkeypatch.setattr(precision, "measure_float32_products",
                        CountedFloat32(aten=10.0, onednn=10.0 * onednn))
    products = []
    real = functional._onednn_product
    monkeypatch.setattr(functional, "_onednn_product",
                        lambda *args: products.append(torch.is_grad_enabled()) or real(*args))
    printed = Console(record=True, width=300, file=io.StringIO())
    monkeypatch.setattr("tests.test_training.QUIET", printed)
    train(reversal_config(tmp_path, max_len=4, max_steps=4, validate_every=4, log_every=2),
          tmp_path / "run")
    verdict = "oneDNN's" if onednn > 1 else "ATen's"
    assert f"float32 products for training: {verdict} (oneDNN {onednn:.2f}x ATen" in printed.export_text()
    assert bool(products) is (onednn > 1)  # the training steps' products (validation: ATen's)
