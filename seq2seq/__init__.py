"""seq2seq: recurrent sequence models (RNN, GRU, LSTM) for translation, classification and
generation, with one set of tokenizers, encoders, training loop and run-directory format.

    from seq2seq import Translator, Classifier, Generator
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Classifier", "Generator", "Translator", "__version__"]

# Imported lazily so `import seq2seq` (and the CLI's start-up) stays fast.
_LAZY = {"Translator": "translator", "Classifier": "classifier", "Generator": "generator"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
