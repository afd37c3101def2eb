"""Several processes train one model (torchrun, gloo on the CPU).

Two processes must train the model one process trains on the same batches; a killed job must
resume exactly; a dead process must end the job, never hang it; misuse is refused in one line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from seq2seq.cli.train import check_batch_for_processes
from seq2seq.config import config_from_dict
from seq2seq.errors import UserError
from seq2seq.training.distributed import ProcessInfo, process_device
from tests.cli_helpers import run_cli
from tests.test_classification import write_config as classification_config
from tests.test_language_model import stream_config
from tests.test_reliability import translation_config

# After 8 steps of Adam the weights of 2 processes and of 1 differ only by summation order
# (the gradient is summed over two halves of each batch): measured ~3e-7, asserted 1e-5.
TOLERANCE = 1e-5


def torchrun(*args, cwd: Path, processes: int = 2, launcher: tuple[str, ...] = (),
             **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", *launcher, "-m", "seq2seq", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **popen)


def run_torchrun(*args, cwd: Path, timeout: float = 180) -> str:
    process = torchrun(*args, cwd=cwd)
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def newest_weights(run: Path) -> dict[str, torch.Tensor]:
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    return load_file(str(newest / "model.safetensors"))


def without_dropout(*extra: str) -> list[str]:
    return ["--set", "model.embedding_dropout=0", "--set", "model.output_dropout=0", *extra]


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def head_config(head: str, directory: Path) -> Path:
    if head == "translation":
        return translation_config(directory, max_steps=8, validate_every=4, log_every=2)
    if head == "classification":
        path = classification_config(directory)
        raw = yaml.safe_load(path.read_text())
        raw["training"].update(max_steps=8, validate_every=4, batch_size=16)
        return write_yaml(path, raw)
    text = directory / "text.txt"
    text.write_text("the cat sat on the mat and the dog ran in the fog.\n" * 40, encoding="utf-8")
    return write_yaml(directory / "lm.yaml", stream_config(text, steps=8, bptt=8, validate_every=4))


@pytest.fixture(scope="module")
def trained_by_one_and_two(tmp_path_factory):
    """head -> (the run one process trained, the run two processes trained, the job's output),
    the same config and batches, dropout off (the processes would draw their own masks);
    trained when first asked for."""
    made: dict[str, tuple[Path, Path, str]] = {}

    def runs(head: str) -> tuple[Path, Path, str]:
        if head not in made:
            directory = tmp_path_factory.mktemp(head)
            config = head_config(head, directory)
            overrides = without_dropout("--set", "training.num_threads=1")
            one = run_cli("train", config, "--run-dir", directory / "one", "-q", *overrides)
            assert one.exit_code == 0, one.output
            output = run_torchrun("train", config, "--run-dir", directory / "two", "-q",
                                  *overrides, cwd=directory)
            made[head] = (directory / "one", directory / "two", output)
        return made[head]
    return runs


@pytest.mark.parametrize("head", ["translation", "classification", "language_model"])
def test_two_processes_train_the_model_one_process_trains(trained_by_one_and_two, head):
    """Batches are global: each process takes half of every batch, DDP averages the gradients,
    the loss is divided by the whole batch's count, so the updates are those of one process.
    The stream LM also carries each process's hidden state from window to window."""
    one, two, output = trained_by_one_and_two(head)
    assert output.count("done: 8 steps") == 1, output  # rank 0 speaks for the job
    a, b = newest_weights(one), newest_weights(two)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=TOLERANCE, rtol=0), name
    # the logs of the job are those of one process: the whole batch's loss, written once
    rows = [r for r in (two / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    ones = [r for r in (one / "metrics.jsonl").read_text().splitlines() if '"train"' in r]
    assert len(rows) == len(ones)
    loss = [yaml.safe_load(r)["loss"] for r in rows]
    assert loss == pytest.approx([yaml.safe_load(r)["loss"] for r in ones], abs=1e-4)


def test_a_killed_job_resumes_exactly(tmp_path):
    """SIGKILL every process of a 2-process job mid-run; torchrun --resume continues it to the
    same weights, bit for bit, as a job that was never stopped (dropout on: each process's
    random numbers are saved and restored)."""
    config = translation_config(tmp_path, max_steps=100_000, validate_every=100_000,
                                checkpoint_every=3, log_every=3)
    run = tmp_path / "killed"
    job = torchrun("train", config, "--run-dir", run, "-q", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints").is_dir() or not list((run / "checkpoints").glob("step_*")):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
        time.sleep(0.02)
    kill_job(job)
    saved = sorted((run / "checkpoints").glob("step_*"))[-1]
    end = int(saved.name.split("_")[1]) + 6
    run_torchrun("train", "--resume", "--run-dir", run, "-q", "--set",
                 f"training.max_steps={end}", cwd=tmp_path)
    run_torchrun("train", config, "--run-dir", tmp_path / "straight", "-q", "--set",
                 f"training.max_steps={end}", cwd=tmp_path)
    resumed, straight = newest_weights(run), newest_weights(tmp_path / "straight")
    assert all(torch.equal(resumed[n], straight[n]) for n in straight)


def kill_job(job: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (each runs in a session of its own)."""
    pids = [job.pid, *worker_pids(job.pid).values()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    job.wait()
    for pid in pids[1:]:  # (they are torchrun's children: gone once it is reaped)
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            time.sleep(0.01)


def worker_pids(agent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes."""
    found = {}
    for child in Path(f"/proc/{agent}/task/{agent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = [v for v in environ if v.startswith(b"RANK=")]
        if rank:
            found[int(rank[0][5:])] = int(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc to find the ranks")
@pytest.mark.parametrize("restarts", [0, 1])
def test_a_dead_process_ends_the_job_or_torchrun_restarts_it(tmp_path, restarts):
    """SIGKILL rank 1 mid-run: without restarts the job ends at once with an error naming the
    rank (never a hang); with ``--max-restarts`` torchrun starts it again and it resumes from
    its last checkpoint and finishes by itself."""
    config = translation_config(tmp_path, max_steps=60 if restarts else 100_000,
                                validate_every=100_000, checkpoint_every=5)
    run = tmp_path / "run"
    job = torchrun("train", config, "--run-dir", run, "-q", cwd=tmp_path,
                   launcher=[f"--max-restarts={restarts}"])
    deadline = time.monotonic() + 120
    while not list((run / "checkpoints").glob("step_*")) or len(worker_pids(job.pid)) < 2:
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[0]
        time.sleep(0.02)
    os.kill(worker_pids(job.pid)[1], signal.SIGKILL)
    try:
        output, _ = job.communicate(timeout=120 if restarts else 60)
    finally:
        if job.poll() is None:
            kill_job(job)
    if restarts:
        assert job.returncode == 0, output
        assert "torchrun restart 1: resuming" in output and "done: 60 steps" in output, output
    else:
        assert job.returncode != 0 and "done:" not in output, output
        assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*-9", output), output


@pytest.mark.parametrize("environment, words", [
    ({"WORLD_SIZE": "2", "RANK": "2"}, ["RANK=2", "WORLD_SIZE=2"]),
    ({"WORLD_SIZE": "two"}, ["WORLD_SIZE='two'", "integer"]),
    ({"WORLD_SIZE": "2", "RANK": "0"}, ["MASTER_ADDR", "torchrun"]),
])
def test_a_broken_torchrun_environment_is_refused(monkeypatch, environment, words):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as caught:
        ProcessInfo.from_environment()
    assert all(word in str(caught.value) for word in words), caught.value


def test_more_processes_than_gpus_or_a_fixed_gpu_are_refused(monkeypatch):
    two = ProcessInfo(rank=1, world_size=2, local_rank=1, local_world_size=2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="2 processes on this machine but 1 CUDA device"):
        process_device("cuda", two)
    with pytest.raises(UserError, match="LOCAL_RANK"):
        process_device("cuda:1", two)


def test_a_batch_smaller_than_the_process_count_is_refused(tmp_path):
    config = config_from_dict(yaml.safe_load(translation_config(tmp_path, batch_size=3).read_text()))
    with pytest.raises(UserError, match="batch_size=3 is the batch of all processes"):
        check_batch_for_processes(config, ProcessInfo(rank=0, world_size=4, local_world_size=4))
    check_batch_for_processes(config, ProcessInfo(rank=0, world_size=3, local_world_size=3))


def test_resuming_with_another_process_count_is_refused(trained_by_one_and_two):
    _, two, _ = trained_by_one_and_two("translation")
    result = run_cli("train", "--resume", "--run-dir", two, "--set", "training.max_steps=12")
    assert result.exit_code == 2 and "trained by 2 processes" in result.output, result.output
