"""``seq2seq classify RUN_DIR`` and the classification side of ``seq2seq evaluate``."""

from __future__ import annotations

from ..errors import UserError
from .app import EvaluateRequest


def evaluate_classification(request: EvaluateRequest) -> dict:
    raise UserError("classification is not available yet in this version")
