"""The ``seq2seq`` command line. Each module registers its commands on the one Typer app:

- ``train``: every task (the config names it);
- ``translate``, ``classify``, ``generate``: inference, one per head;
- ``evaluate``: scores any run, dispatching on the run's task.
"""

from . import classify, evaluate, generate, train, translate  # noqa: F401  (registers commands)
from .app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
