"""Every example in README.md runs as written.

The README marks the fenced blocks this test runs with an HTML comment on the line before:

    <!-- readme-test: train -->   each `seq2seq train CONFIG ...` line is run with the tiny-model
                                  overrides of TINY[CONFIG] appended (the demo configs train for
                                  minutes; the same command on a tiny model takes seconds)
    <!-- readme-test: run -->     the block is run as written (bash, or python for ```python)
    <!-- readme-test: shown tests/test_x.py -->   not run here (it needs GPUs, several
                                  processes or a server left running): the named test file
                                  runs the same commands

Blocks run in order, in a scratch directory holding links to the checkout's ``configs/`` and
``data/``, with a ``seq2seq`` command on the PATH (what ``source .venv/bin/activate`` gives):
each one is a real process, forked from a server that imported torch once
(``tests/command_server.py``), so the examples do not spend a minute starting Python.
Unmarked blocks (``make demo``, ``make test``, the activate line) are not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .command_server import CommandServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: (train|run) -->\n```(bash|python)\n(.*?)```", re.DOTALL)
SHOWN = re.compile(r"<!-- readme-test: shown (\S+) -->\n```bash\n")

ONE_THREAD = ["--set", "training.num_threads=1", "-q"]
TINY = {
    "configs/demo_es_en.yaml": [
        "--set", "data.train=tiny/es_en_train.tsv", "--set", "data.dev=tiny/es_en_dev.tsv",
        "--set", "data.test=tiny/es_en_test.tsv", "--set", "tokenizer.kind=char",
        "--set", "model.embedding_size=16", "--set", "model.encoder.hidden_size=16",
        "--set", "model.decoder.hidden_size=32", "--set", "training.max_steps=4",
        "--set", "training.validate_every=4", "--set", "decoding.batch_size=16", *ONE_THREAD],
    "configs/demo_sst2.yaml": [
        "--set", "data.train=tiny/sst2_train.tsv", "--set", "data.dev=tiny/sst2_dev.tsv",
        "--set", "data.test=tiny/sst2_dev.tsv", "--set", "model.embedding_size=16",
        "--set", "model.encoder.hidden_size=16", "--set", "training.max_steps=4",
        "--set", "training.validate_every=4", *ONE_THREAD],
    "configs/demo_shakespeare.yaml": [
        "--set", "data.train=tiny/shakespeare.txt", "--set", "model.encoder.hidden_size=32",
        "--set", "training.max_steps=4", "--set", "training.validate_every=4", *ONE_THREAD],
}


def readme_blocks() -> list[tuple[str, str, str]]:
    """(mode, language, code) of every marked block, in README order."""
    return MARKER.findall(README.read_text(encoding="utf-8"))


def tiny_training(code: str) -> list[list[str]]:
    """The block's `seq2seq train` commands with their tiny overrides appended."""
    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[:2] == ["seq2seq", "train"] and words[2] in TINY, \
            f"a 'readme-test: train' block holds only `seq2seq train <demo config>` lines: {line}"
        commands.append(words + TINY[words[2]])
    return commands


def slice_lines(source: Path, target: Path, lines: int) -> None:
    text = source.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join(text[:lines]), encoding="utf-8")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A scratch checkout: configs/ and data/ linked, tiny data under tiny/, seq2seq on PATH."""
    directory = tmp_path_factory.mktemp("readme")
    for name in ("configs", "data"):
        (directory / name).symlink_to(ROOT / name)
    tiny = directory / "tiny"
    tiny.mkdir()
    data = ROOT / "data"
    slice_lines(data / "tatoeba-es-en" / "train.tsv", tiny / "es_en_train.tsv", 300)
    slice_lines(data / "tatoeba-es-en" / "dev.tsv", tiny / "es_en_dev.tsv", 20)
    slice_lines(data / "tatoeba-es-en" / "test.tsv", tiny / "es_en_test.tsv", 20)
    slice_lines(data / "sst2" / "train.tsv", tiny / "sst2_train.tsv", 400)
    slice_lines(data / "sst2" / "dev.tsv", tiny / "sst2_dev.tsv", 40)
    slice_lines(data / "tiny-shakespeare" / "input.txt", tiny / "shakespeare.txt", 600)

    bin_dir = directory / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "SEQ2SEQ_CACHE_DIR": str(directory / "cache")}
    server = CommandServer(directory, env)
    server.shim(bin_dir)
    yield directory, env
    server.close()


def run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (f"{command!r} failed ({result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_the_readme_marks_its_examples():
    blocks = readme_blocks()
    trained = {words[2] for mode, _, code in blocks if mode == "train"
               for words in tiny_training(code)}
    assert trained == set(TINY), "every demo config is trained in the README"
    assert sum(mode == "run" for mode, _, _ in blocks) >= 4
    # a bash block the test would not run must not look like an example it does
    text = README.read_text(encoding="utf-8")
    for fence in re.finditer(r"(.*)\n```bash\n(.*?)```", text, re.DOTALL):
        shown = SHOWN.match(fence.group(1).strip() + "\n```bash\n")
        if shown:
            assert (ROOT / shown.group(1)).is_file(), f"no test file {shown.group(1)}"
        elif "readme-test" not in fence.group(1):
            assert re.fullmatch(r"(make (demo|test)|source \.venv/bin/activate)\b.*",
                                fence.group(2).strip(), re.DOTALL), fence.group(2)


def test_every_readme_example_runs_as_written(workdir):
    directory, env = workdir
    for mode, language, code in readme_blocks():
        if mode == "train":
            for command in tiny_training(code):
                run(command, directory, env)
        elif language == "bash":
            result = run(["bash", "-euo", "pipefail", "-c", code], directory, env)
            assert result.stdout.strip(), f"no output from:\n{code}"
        else:
            run([sys.executable, "-c", code], directory, env)
    # what the examples promise to write
    assert len((directory / "sentences.en").read_text(encoding="utf-8").splitlines()) == 8
    assert len((directory / "labels.tsv").read_text(encoding="utf-8").splitlines()) == 8


def test_links_between_the_documents_resolve():
    pages = [README, ROOT / "BENCHMARKS.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
