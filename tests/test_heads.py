"""The head table: every task the config accepts has one row, and every part of a row loads."""

from __future__ import annotations

import json
import typing

import pytest

from seq2seq.config import Task
from seq2seq.heads import HEADS, head_of

from .cli_helpers import assert_user_error, run_cli


def test_every_task_has_a_head_whose_parts_load():
    assert set(HEADS) == set(typing.get_args(Task))
    for task, head in HEADS.items():
        assert head.task == task
        assert hasattr(head.load("training"), "setup")
        assert hasattr(head.load("inference"), "from_pretrained")
        assert callable(head.load("evaluate")) and callable(head.load("diagnose"))
        service = head.load("service")
        assert all(hasattr(service, part) for part in ("Request", "prepare", "run", "respond"))
        assert callable(head.load("export"))


def test_an_unknown_task_is_one_line_naming_where(tmp_path):
    with pytest.raises(Exception, match="run.json: unknown task 'poetry'"):
        head_of("poetry", "run.json")
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1, "task": "poetry"}))
    (tmp_path / "config.yaml").write_text("task: translation\n")
    assert_user_error(run_cli("evaluate", tmp_path), "unknown task 'poetry'")


def test_evaluation_is_callable_from_python_and_quiet_by_default(tmp_path, capsys):
    from seq2seq.evaluation import EvaluateRequest
    from seq2seq.evaluation.translation import evaluate

    from .test_reliability import translation_config

    run = tmp_path / "run"
    assert run_cli("train", translation_config(tmp_path), "--run-dir", run, "-q").exit_code == 0
    capsys.readouterr()
    metrics = evaluate(EvaluateRequest(run_dir=run, beam_size=1))
    assert metrics["sentences"] == 20 and {"bleu", "chrf", "ter"} <= metrics.keys()
    assert capsys.readouterr() == ("", "")
    assert json.loads((run / "eval" / "test" / "metrics.json").read_text())["bleu"] == \
        metrics["bleu"]
