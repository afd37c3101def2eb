"""The ``seq2seq`` command line. Each module registers its commands on the one Typer app:

- ``train``: every task (the config names it);
- ``translate``, ``classify``, ``generate``: inference, one per head;
- ``evaluate``: scores any run, dispatching on the run's task;
- ``serve``: runs of any head behind an HTTP API and a web page.
- ``export``: a run's model as ONNX graphs (which the inference commands also run).
"""

import os
import sys

from . import classify, evaluate, export, generate, serve, train, translate  # noqa: F401  (registers commands)
from .app import app

# Commands that have written and closed every output when the app returns. Tearing down an
# interpreter that imported torch (some 170,000 objects) takes about half a second, a tenth
# of a greedy `translate` of 1,000 sentences, so these leave without it. `train` does not:
# its run is long and it should shut down the ordinary way, but for one case: a process of a
# torchrun job. Its process group is destroyed by then, yet an interpreter teardown that frees
# the last of torch.distributed's C++ objects has aborted a rank ("terminate called without an
# active exception", SIGABRT) after a job had written everything, failing the job.
EXIT_WITHOUT_TEARDOWN = {"translate", "classify", "generate", "evaluate"}


def main() -> None:
    try:
        app()
    except SystemExit as done:
        command = sys.argv[1] if len(sys.argv) > 1 else None
        if command in EXIT_WITHOUT_TEARDOWN or (command == "train" and "LOCAL_RANK" in os.environ):
            exit_now(done.code)
        raise


def exit_now(code: int | str | None) -> None:
    """End the process with ``code`` as ``sys.exit`` would, after flushing stdout and stderr,
    but without the interpreter's teardown (no atexit handlers, no object finalisation)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a reader that went away; a closed stream
        pass
    os._exit(code or 0)


__all__ = ["app", "exit_now", "main"]
