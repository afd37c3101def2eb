"""The crash-and-resume harness: a tiny training run is stopped again and again, by SIGKILL,
SIGINT and SIGTERM at random (seeded) moments — in set-up, in a step, in validation, while a
checkpoint is written — and resumed each time; it must end bit-identical to a run that was
never stopped: same weights, same logged losses and scores, same best checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from .cli_helpers import run_cli
from .command_server import CommandServer

SIGNALS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM,
           signal.SIGINT]
MAX_STEPS = 100


def write_pairs(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    rows = ["src\ttrg"]
    for _ in range(n):
        digits = [rng.choice("0123456789") for _ in range(rng.randint(1, 6))]
        rows.append(f"{' '.join(digits)}\t{' '.join(reversed(digits))}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def harness_config(directory: Path) -> Path:
    write_pairs(directory / "train.tsv", 300, seed=0)
    write_pairs(directory / "dev.tsv", 120, seed=1)
    raw = {
        "task": "translation", "name": "harness",
        "data": {"train": str(directory / "train.tsv"), "dev": str(directory / "dev.tsv"),
                 "max_src_length": 8},
        "tokenizer": {"kind": "word", "vocab_size": 20},
        "model": {"embedding_size": 16, "encoder": {"hidden_size": 16},
                  "decoder": {"hidden_size": 32}},
        # dropout and scheduled sampling use the random generator: resume must restore it
        "training": {"batch_size": 16, "max_steps": MAX_STEPS, "validate_every": 10,
                     "checkpoint_every": 3, "log_every": 2, "keep_best": 2, "keep_last": 2,
                     "teacher_forcing": 0.9, "num_threads": 1},
        "decoding": {"beam_size": 2},
    }
    path = directory / "harness.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


class Victim:
    """A training process whose stderr is read as it runs (to know when training began): a
    fork of the command server, which imported torch once for all of them; its SIGINT
    handler is Python's own, as a terminal gives it (a shell runs background jobs such as
    `make test &` with SIGINT ignored, which a fresh process would inherit)."""

    def __init__(self, server: CommandServer, config: Path, run: Path) -> None:
        resume = (run / "run.json").is_file()
        command = ["train", "-q", "--run-dir", str(run)]
        command += ["--resume"] if resume else [str(config)]
        self.process = server.spawn(command, run.parent, dict(os.environ))
        self.lines: list[str] = []
        self.training = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if line.startswith("model:"):
                self.training.set()
        self.training.set()

    def finish(self) -> int:
        code = self.process.wait(timeout=120)
        self.reader.join(timeout=10)
        return code


def last_logged_step(run: Path) -> int:
    """The newest step in metrics.jsonl (0 before any): how far the run has come."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):  # a line being written
            continue
    return 0


def comparable_metrics(run: Path) -> list[dict]:
    """metrics.jsonl without what depends on the clock."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith(("_per_s", "seconds"))}
            for row in rows]


def without_timings(text: str) -> str:
    return re.sub(r"\[[0-9.]+ s\]", "", text)


@pytest.fixture
def server(tmp_path):
    server = CommandServer(tmp_path, dict(os.environ))
    yield server
    server.close()


def test_signals_at_random_moments_then_resume_equal_an_uninterrupted_run(tmp_path, server):
    config = harness_config(tmp_path)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    result = run_cli("train", config, "--run-dir", whole, "-q")
    assert result.exit_code == 0, result.output

    rng = random.Random(20261201)
    seen: list[str] = []
    outputs: list[str] = []  # the end of each victim's output, for a failure's message
    for signum in SIGNALS:
        done = last_logged_step(stopped)
        victim = Victim(server, config, stopped)
        if rng.random() < 0.2:  # now and then during set-up (data, tokenizer, model)
            victim.training.wait(timeout=120)
            time.sleep(rng.uniform(0.0, 0.05))
        else:  # a few steps further on (whatever the machine's speed), then a little after
            target = min(done + rng.randint(3, 10), MAX_STEPS - 6)
            deadline = time.time() + 120
            while (victim.process.poll() is None and time.time() < deadline
                   and last_logged_step(stopped) < target):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.05))  # into a step, a validation or a checkpoint
        if victim.process.poll() is None:
            victim.process.send_signal(signum)
        code = victim.finish()
        output = "".join(victim.lines)
        assert "Traceback" not in output or signum == signal.SIGINT and "model:" not in output, output
        stopped_at = re.search(r"stopped at step (\d+); checkpoint saved", output)
        if stopped_at:  # a graceful stop: exit 128 + signal, and its checkpoint is that step
            assert code == 128 + signum, output
            assert (stopped / f"checkpoints/step_{int(stopped_at.group(1)):08d}").is_dir()
        seen.append(f"{signal.Signals(signum).name}->{stopped_at.group(1) if stopped_at else code}")
        outputs.append(output[-600:])
        if code == 0:
            break
    else:
        victim = Victim(server, config, stopped)
        code = victim.finish()
        assert code == 0, "".join(victim.lines)
    graceful = [s for s in seen if s.split("->")[1].isdigit() and int(s.split("->")[1]) > 0]
    assert graceful and any(s.startswith("SIGKILL->-9") for s in seen), (seen, outputs)

    final = f"checkpoints/step_{MAX_STEPS:08d}/model.safetensors"
    for name in ("model.safetensors", final):
        a, b = load_file(str(whole / name)), load_file(str(stopped / name))
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].equal(b[key]), (name, key, seen)
    assert comparable_metrics(stopped) == comparable_metrics(whole), seen
    assert (json.loads((stopped / "best/index.json").read_text())
            == json.loads((whole / "best/index.json").read_text()))
    assert without_timings((stopped / "validation.log").read_text()) == \
        without_timings((whole / "validation.log").read_text())
