"""The classification service: ``POST /v1/classify``.

The texts of all waiting requests are classified in one :meth:`Classifier.predict` call
(every label ranked); each request then keeps its own ``top_k``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..classifier import Classifier, Prediction
from .batching import Job
from .schemas import ClassifyRequest, Limits, check_range, check_texts


class ClassificationService:
    Request = ClassifyRequest

    def __init__(self, name: str, classifier: Classifier, limits: Limits) -> None:
        self.name = name
        self.classifier = classifier
        self.limits = limits

    def describe(self) -> dict[str, Any]:
        return {"labels": list(self.classifier.labels.names)}

    def prepare(self, body: ClassifyRequest,
                on_token: Callable[[int, str], None] | None = None) -> Job:
        check_texts(body.texts, self.limits)
        check_range(body.top_k, "top_k", 1)  # more than there are labels: all of them
        tokens = self.classifier.tokenizer.encode_batch(body.texts)
        return Job(("classify",), list(body.texts), sum(len(ids) + 1 for ids in tokens))

    def run(self, key: Hashable, texts: list[str]) -> list[Prediction]:
        return self.classifier.predict(texts, top_k=len(self.classifier.labels))

    def respond(self, body: ClassifyRequest, outputs: list[Prediction]) -> dict[str, Any]:
        return {"model": self.name, "predictions": [
            {"label": p.label, "probability": p.probability,
             "top": [{"label": label, "probability": q} for label, q in p.top[: body.top_k]]}
            for p in outputs]}
