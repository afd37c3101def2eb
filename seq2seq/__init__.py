"""seq2seq: recurrent sequence models (RNN, GRU, LSTM) for translation, classification and
generation, with one set of tokenizers, encoders, training loop and run-directory format."""

__version__ = "0.1.0"

__all__ = ["Translator", "__version__"]


def __getattr__(name: str):
    # Imported lazily so `import seq2seq` (and the CLI's start-up) stays fast.
    if name == "Translator":
        from .translator import Translator

        return Translator
    raise AttributeError(f"module 'seq2seq' has no attribute {name!r}")
