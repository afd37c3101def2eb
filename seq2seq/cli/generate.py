"""``seq2seq generate RUN_DIR`` and the language-model side of ``seq2seq evaluate``."""

from __future__ import annotations

from ..errors import UserError
from .app import EvaluateRequest


def evaluate_language_model(request: EvaluateRequest) -> dict:
    raise UserError("language models are not available yet in this version")
