"""Evaluating a trained run on held-out data, callable from Python as from the command line.

Each head has its module (``translation``, ``classification``, ``language_model``) with
``evaluate(request, out)`` (scores, ``metrics.json``, an optional report) and
``diagnose(request, out)`` (gradient flow through time); ``seq2seq.heads`` names them. What
they print goes through ``out``: nothing by default, the terminal from the CLI.

    from seq2seq.evaluation import EvaluateRequest, PRINT
    from seq2seq.evaluation.translation import evaluate
    metrics = evaluate(EvaluateRequest(run_dir=Path("runs/demo_es_en"), beam_size=5), PRINT)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _ignore(value: Any) -> None:
    pass


@dataclass(frozen=True)
class Output:
    """Where an evaluation's text goes: ``result`` the figures, ``note`` progress and the files
    written; with ``tables``, tables (rich renderables) go to ``table`` instead of plain lines."""

    result: Callable[[str], None] = _ignore
    note: Callable[[str], None] = _ignore
    table: Callable[[Any], None] = _ignore
    tables: bool = False


QUIET = Output()
PRINT = Output(result=print, note=lambda text: print(text, file=sys.stderr))


@dataclass
class EvaluateRequest:
    """What ``seq2seq evaluate`` was asked; each head's evaluation reads the parts it needs."""

    run_dir: Path
    data: Path | None = None  # a file in the config's data format (TSV/CSV/JSONL/text)
    split: str = "test"  # else this split of the run's config
    src: Path | None = None  # translation: plain source and reference files
    ref: Path | None = None
    beam_size: int | None = None
    length_penalty: float | None = None
    batch_size: int | None = None
    amp: bool | None = None  # translation: mixed-precision decoding
    checkpoint: Path | None = None
    device: str = "auto"
    output_dir: Path | None = None  # default: RUN_DIR/eval/<split or file stem>
    report: Path | None = None  # also write a Markdown + HTML report here
    compare_run: Path | None = None  # translation report: compare with this run's translations
    compare_beam_size: int | None = None  # ... or with this run at another beam size

    def data_name(self) -> str:
        """A short name for the evaluated data: the split or the file's stem."""
        chosen = self.src or self.data
        if chosen is None:
            return self.split
        name = chosen.name
        for suffix in (".gz", ".tsv", ".csv", ".jsonl", ".json", ".txt"):
            name = name.removesuffix(suffix)
        if name in ("train", "dev", "test"):  # --data dev.tsv must not share eval/dev with --split dev
            return chosen.name
        return name or "data"

    def out_dir(self) -> Path:
        return self.output_dir or self.run_dir / "eval" / self.data_name()


def finish_diagnosis(request: EvaluateRequest, out: Output, flows: list[Any], position: str,
                     where_loss: str, clip: float, described: str) -> dict[str, Any]:
    """Every head's end of a diagnosis: print the curves, write the report, say where."""
    from ..reporting.gradient_flow import print_flows, write_diagnosis

    print_flows(flows, out.result)
    directory = request.out_dir()
    metrics = write_diagnosis(directory, request.run_dir, flows, position, where_loss, clip,
                              described)
    out.note(f"wrote {directory / 'report.html'} and {directory / 'metrics.json'}")
    return metrics
