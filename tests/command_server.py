"""Real `seq2seq` processes without paying for their start-up each time.

A `seq2seq` process spends 2–5 s importing torch (and, to train, torch._dynamo and datasets)
before it does anything; the suite's command-line tests would spend minutes doing only that.
The server imports all of it once. Each command is then a fork of the server: it takes the
caller's working directory, environment and standard streams, runs `seq2seq.cli.main` with the
caller's arguments, and exits with its status. What the command does after start-up is what a
fresh process does: its own pid, signals, pipes, exit status and files.

    python -m tests.command_server SOCKET    # prints "ready" once it accepts commands

A client sends, on one connection: a 4-byte length, then JSON ``{"argv", "cwd", "env"}``, with
its stdin, stdout and stderr attached (SCM_RIGHTS); the server answers the child's pid and then
its exit status (negative: the signal that ended it), 4 bytes each. `shim` writes a `seq2seq`
executable that is such a client; `spawn` starts one from Python and returns its pid.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INT = struct.Struct("!i")

SHIM = """#!{python} -S
import json, os, socket, struct, sys
client = socket.socket(socket.AF_UNIX)
client.connect({path!r})
message = json.dumps({{"argv": ["seq2seq", *sys.argv[1:]], "cwd": os.getcwd(),
                      "env": dict(os.environ)}}).encode()
socket.send_fds(client, [struct.pack("!i", len(message)) + message], [0, 1, 2])
reply = b""
while len(reply) < 8:
    chunk = client.recv(8 - len(reply))
    if not chunk:
        sys.exit("seq2seq: the command server went away")
    reply += chunk
status = struct.unpack("!ii", reply)[1]
sys.exit(status if status >= 0 else 128 - status)
"""


def _receive_exactly(connection: socket.socket, size: int, start: bytes = b"") -> bytes:
    data = start
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


def _run_command(message: dict, streams: list[int]) -> None:
    """In the forked child: become the command, then exit with its status."""
    for target, fd in enumerate(streams):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(message["cwd"])
    os.environ.clear()
    os.environ.update(message["env"])
    sys.argv = message["argv"]
    main_module = sys.modules["__main__"]  # (not `python -m tests.command_server`: Click names
    main_module.__spec__ = main_module.__package__ = None  # the program after sys.argv[0] then)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code, interrupted = 1, False
    try:
        from seq2seq.cli import main
        main()
        code = 0
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            code = done.code or 0
        else:
            print(done.code, file=sys.stderr)
    except BaseException as error:  # what an uncaught exception prints in a fresh process
        import traceback
        traceback.print_exc()
        interrupted = isinstance(error, KeyboardInterrupt)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (BrokenPipeError, ValueError):
                pass
        if interrupted:  # as CPython ends after an uncaught KeyboardInterrupt: by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        os._exit(code)


def _answer(connection: socket.socket, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    try:
        connection.sendall(INT.pack(os.waitstatus_to_exitcode(status)))
    except OSError:
        pass
    connection.close()


def serve(path: str) -> None:
    import datasets  # noqa: F401  (what the commands import lazily, imported once here)
    import sacrebleu  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim imports it at the first step)

    import seq2seq.cli  # noqa: F401
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        head, streams, _, _ = socket.recv_fds(connection, 65536, 3)
        head = _receive_exactly(connection, INT.size, head)
        size = INT.unpack(head[:INT.size])[0]
        message = json.loads(_receive_exactly(connection, INT.size + size, head)[INT.size:])
        pid = os.fork()
        if pid == 0:
            listener.close()
            connection.close()
            _run_command(message, streams)
        for fd in streams:
            os.close(fd)
        connection.sendall(INT.pack(pid))
        threading.Thread(target=_answer, args=(connection, pid), daemon=True).start()


class Command:
    """A command running in a fork of the server: the part of `subprocess.Popen` tests use."""

    def __init__(self, connection: socket.socket, stderr) -> None:
        self.connection, self.stderr = connection, stderr
        self.pid = INT.unpack(_receive_exactly(connection, INT.size))[0]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.connection], [], [], 0)[0]:
            self.returncode = INT.unpack(_receive_exactly(self.connection, INT.size))[0]
            self.connection.close()
        return self.returncode

    def wait(self, timeout: float) -> int:
        if self.returncode is None and not select.select([self.connection], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(f"seq2seq (pid {self.pid})", timeout)
        return self.poll()

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


class CommandServer:
    """The server as a child of the test process; `close` ends it."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        """``env``: what the commands' environment holds at start-up (OMP_NUM_THREADS is
        read when torch is imported: in the server)."""
        self.path = str(directory / "seq2seq.sock")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.command_server", self.path], cwd=ROOT,
            env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        assert ready == "ready\n", f"the command server did not start: {ready!r}"

    def shim(self, directory: Path) -> Path:
        """A `seq2seq` executable in ``directory`` that runs its command in the server."""
        directory.mkdir(parents=True, exist_ok=True)
        shim = directory / "seq2seq"
        shim.write_text(SHIM.format(python=sys.executable, path=self.path), encoding="utf-8")
        shim.chmod(0o755)
        return shim

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Command:
        """``seq2seq *argv`` with stdin and stdout on /dev/null and stderr piped to the caller."""
        client = socket.socket(socket.AF_UNIX)
        client.connect(self.path)
        message = json.dumps({"argv": ["seq2seq", *argv], "cwd": str(cwd), "env": env}).encode()
        read_end, write_end = os.pipe()
        with open(os.devnull, "rb") as stdin, open(os.devnull, "wb") as stdout:
            socket.send_fds(client, [INT.pack(len(message)) + message],
                            [stdin.fileno(), stdout.fileno(), write_end])
        os.close(write_end)
        return Command(client, os.fdopen(read_end, encoding="utf-8"))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


if __name__ == "__main__":
    serve(sys.argv[1])
