"""Reports: written from tiny trained models; the HTML parses and embeds every figure; metrics.json
holds the printed numbers; a model without attention gets no heatmaps instead of an error."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from seq2seq.cli import app
from seq2seq.models.encoder import RecurrentEncoder
from seq2seq.reporting.document import Document
from seq2seq.reporting.gradient_flow import Probe, measure

from .cli_helpers import assert_user_error, runner
from .test_cli_translation import tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects images and checks that every opened tag is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert page.stack == [], f"unclosed tags: {page.stack}"
    return page


def check_report(directory: Path) -> tuple[_Page, dict]:
    """The three files exist; every figure is embedded in the HTML and linked from the Markdown."""
    for name in ("report.md", "report.html", "metrics.json"):
        assert (directory / name).is_file(), name
    page = parse_html(directory / "report.html")
    figures = sorted((directory / "figures").glob("*.png"))
    assert len(page.images) == len(figures) > 0
    for src in page.images:
        assert src.startswith("data:image/png;base64,")  # nothing fetched from elsewhere
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    markdown = (directory / "report.md").read_text(encoding="utf-8")
    for figure in figures:
        assert f"(figures/{figure.name})" in markdown
    return page, json.loads((directory / "metrics.json").read_text(encoding="utf-8"))


def train_tiny(tmp_path: Path, attention: str) -> Path:
    config = tiny_config(tmp_path)
    run = tmp_path / f"run_{attention}"
    result = runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q",
                                 "--set", f"model.decoder.attention={attention}",
                                 "--set", "training.max_steps=60",
                                 "--set", "training.learning_rate=0.005"])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_translation_report(tmp_path, attention):
    run = train_tiny(tmp_path, attention)
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(run), "--report", str(out), "--beam-size", "2",
                                 "--compare-beam-size", "1"])
    assert result.exit_code == 0, result.output
    page, metrics = check_report(out)
    # The numbers in metrics.json are the ones printed.
    printed = {name: float(re.search(rf"^{label} = ([\d.]+)", result.stdout, re.M).group(1))
               for name, label in (("bleu", "BLEU"), ("chrf", "chrF2"), ("ter", "TER"))}
    for name, value in printed.items():
        assert metrics[name] == pytest.approx(value, abs=0.01)
    assert metrics["sentences"] == 30 and metrics["decoding"]["beam_size"] == 2
    assert metrics["model"]["decoder"]["attention"] == attention
    assert len(metrics["data_files"][0]["sha256"]) == 64
    assert sum(r["sentences"] for r in metrics["bleu_by_source_length"]) == 30
    test = metrics["comparison"]["paired_bootstrap"]
    assert set(test) == {"bleu", "chrf"} and 0 <= test["bleu"]["p_value"] <= 1
    assert test["bleu"]["system"] == pytest.approx(metrics["bleu"], abs=0.01)
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"training_curves", "bleu_by_length"} <= names
    heatmaps = {n for n in names if n.startswith("attention_")}
    if attention == "none":
        assert not heatmaps
        assert "no attention" in " ".join(page.text)
    else:
        assert heatmaps
    # The evaluation's own metrics.json (RUN_DIR/eval/...) agrees with the report's.
    assert json.loads((run / "eval" / "test" / "metrics.json").read_text())["bleu"] == metrics["bleu"]


def test_report_command_for_a_finished_run(tmp_path):
    run = train_tiny(tmp_path, "luong")
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    _, metrics = check_report(run / "report")
    assert metrics["data"].startswith("test:")


def test_document_escapes_and_renders_tables():
    doc = Document("A <title> & more")
    doc.heading("Scores")
    doc.table(["metric", "value"], [["BLEU | x", 31.234], ["n", 1200]])
    doc.text("<script>alert(1)</script>")
    html = doc.html()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "31.23" in html and "1,200" in html
    markdown = doc.markdown()
    assert "| BLEU \\| x | 31.23 |" in markdown and "|---|---:|" in markdown


class _LastStateModel(torch.nn.Module):
    """Embed, run a unidirectional encoder, score the final state: the textbook setting."""

    def __init__(self, cell: str, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = torch.nn.Embedding(20, 16)
        self.encoder = RecurrentEncoder(cell, 16, 32, bidirectional=False)
        self.score = torch.nn.Linear(32, 1)

    def forward(self, ids, lengths):
        _, final = self.encoder(self.embedding(ids), lengths)
        h = final[0] if isinstance(final, tuple) else final
        return self.score(h[-1]).sum()


def _probe(cell: str, ids: torch.Tensor, lengths: torch.Tensor) -> Probe:
    model = _LastStateModel(cell)
    mask = torch.arange(ids.size(1))[None, :] < lengths[:, None]
    return Probe(model, model.embedding, lambda net: net(ids, lengths), mask)


def test_gradient_flow_vanishes_fastest_for_a_plain_rnn():
    ids = torch.randint(0, 20, (8, 40), generator=torch.Generator().manual_seed(1))
    lengths = torch.full((8,), 40)
    decay = {}
    for cell in ("rnn", "gru", "lstm"):
        flow = measure(_probe(cell, ids, lengths), cell, clip=5.0)
        assert len(flow.norms) == 40 and all(v >= 0 for v in flow.norms)
        assert flow.norms[-1] > 1e3 * flow.norms[0] > 0  # the loss sits at the end
        decay[cell] = flow.norms[0] / flow.norms[-1]
        assert flow.clip_factor == pytest.approx(min(1.0, 5.0 / flow.total_norm), rel=1e-4)
    assert decay["rnn"] < decay["gru"] and decay["rnn"] < decay["lstm"]


def test_gradient_flow_ignores_padding():
    ids = torch.randint(0, 20, (4, 12), generator=torch.Generator().manual_seed(2))
    lengths = torch.tensor([12, 12, 6, 6])
    flow = measure(_probe("gru", ids, lengths), "gru", clip=0.0)
    alone = measure(_probe("gru", ids[:2], lengths[:2]), "gru", clip=0.0)
    # Positions 7-12 only exist in the two long rows: their mean is the long rows' mean.
    assert flow.norms[8:] == pytest.approx(alone.norms[8:], rel=1e-5)
    assert flow.clip_factor == 1.0


def test_diagnose_command(tmp_path):
    run = train_tiny(tmp_path, "bahdanau")
    result = runner.invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 0, result.output
    _, metrics = check_report(run / "diagnose")
    labels = [f["label"] for f in metrics["gradient_flow"]]
    assert labels == ["your model (gru, trained)", "rnn, untrained", "gru, untrained",
                      "lstm, untrained"]
    assert "rnn, untrained" in result.stdout


# ---- classification and language-model reports --------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SMALL_SST2 = ["--set", "model.embedding_size=16", "--set", "model.encoder.hidden_size=16",
              "--set", "tokenizer.kind=word", "--set", "tokenizer.min_freq=3",
              "--set", "training.max_steps=30", "--set", "training.validate_every=15",
              "--set", "training.num_threads=1", "-q"]


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_classification_report(tmp_path, pooling):
    run = tmp_path / "sst2"
    result = runner.invoke(app, ["train", str(ROOT / "configs" / "demo_sst2.yaml"), "--run-dir",
                                 str(run), *SMALL_SST2, "--set",
                                 f"model.classifier.pooling={pooling}"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "dev", "--report", str(out)])
    assert result.exit_code == 0, result.output
    page, metrics = check_report(out)
    printed = {name: float(re.search(rf"^{name} ([\d.]+)", result.stdout, re.M).group(1))
               for name in ("accuracy", "macro_f1")}
    for name, value in printed.items():
        assert metrics[name] == pytest.approx(value, abs=0.01)
    assert metrics["texts"] == 872 and sum(map(sum, metrics["confusion_matrix"])) == 872
    assert 0 <= metrics["expected_calibration_error"] <= 100
    assert metrics["model"]["classifier"]["pooling"] == pooling
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert names == {"confusion_matrix", "calibration", "training_curves", "gradient_flow"}
    assert "Most confidently wrong" in " ".join(page.text)
    # `seq2seq diagnose` on the same run.
    result = runner.invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 0, result.output
    _, diagnosis = check_report(run / "diagnose")
    assert len(diagnosis["gradient_flow"]) == 4


@pytest.mark.parametrize("lm_mode", ["stream", "lines"])
def test_language_model_report(tmp_path, lm_mode):
    text = (ROOT / "data" / "tiny-shakespeare" / "input.txt").read_text(encoding="utf-8")
    (tmp_path / "slice.txt").write_text(text[:20000], encoding="utf-8")
    run = tmp_path / "lm"
    result = runner.invoke(app, [
        "train", str(ROOT / "configs" / "demo_shakespeare.yaml"), "--run-dir", str(run), "-q",
        "--set", f"data.train={tmp_path / 'slice.txt'}", "--set", f"data.lm_mode={lm_mode}",
        "--set", "training.max_steps=20", "--set", "training.validate_every=10",
        "--set", "model.encoder.hidden_size=32", "--set", "training.num_threads=1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    result = runner.invoke(app, ["evaluate", str(run), "--split", "dev", "--report", str(out)])
    assert result.exit_code == 0, result.output
    page, metrics = check_report(out)
    ppl = float(re.search(r"^perplexity ([\d.]+)", result.stdout, re.M).group(1))
    assert metrics["ppl"] == pytest.approx(ppl, abs=0.01)
    assert [s["temperature"] for s in metrics["samples"]] == [0.5, 0.8, 1.0]
    assert len(metrics["loss_by_position"]) > 10
    names = {p.stem for p in (out / "figures").glob("*.png")}
    assert names == {"loss_by_position", "training_curves", "gradient_flow"}
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "per direction" not in markdown and " examples" not in markdown  # one-way; tokens
    assert re.search(r"[\d,]+ tokens \([\d,]+ characters\)", markdown)
    # `report` finds the dev split held out of train (data.dev_fraction), like evaluate
    result = runner.invoke(app, ["report", str(run), "--split", "dev"])
    assert result.exit_code == 0, result.output
    assert_user_error(runner.invoke(app, ["report", str(run), "--split", "test"]), "no test data")
    result = runner.invoke(app, ["diagnose", str(run)])
    assert result.exit_code == 0, result.output
    assert len(check_report(run / "diagnose")[1]["gradient_flow"]) == 4
