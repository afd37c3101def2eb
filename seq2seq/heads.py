"""The heads in one table: what each one trains, serves, evaluates and diagnoses with.

Every command that depends on the head of a run looks it up here, so a new head is one row
(and its own modules), not an edit of every command. The parts are named as
``"module:attribute"`` and imported only when used: the command line's start-up (``--help``)
does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Head:
    task: str  # the config's ``task`` and run.json's
    model: str  # what messages call its model: "a translation model"
    description: str
    command: str  # the command that uses its runs
    training: str  # the trainer's TrainingTask: ``.setup(config, run, resume, device, console, process)``
    inference: str  # the inference object: ``.from_pretrained(run_dir, device, weights)``
    evaluate: str  # ``evaluate(request, out) -> metrics``: score held-out data (and report)
    diagnose: str  # ``diagnose(request, out) -> metrics``: gradient flow through time
    service: str  # the HTTP service of ``seq2seq serve``: ``POST /v1/<command>`` (seq2seq.serving)
    export: str  # ``graphs(model) -> {name: (module, example inputs, manifest entry)}``: ONNX

    def load(self, part: str) -> Any:
        """The object a part names, e.g. ``head.load("training")`` -> TranslationTask."""
        module, name = getattr(self, part).split(":")
        return getattr(importlib.import_module(module), name)


HEADS: dict[str, Head] = {
    "translation": Head(
        task="translation", command="translate", model="translation model",
        description="many-to-many: an encoder-decoder translator, optional Bahdanau/Luong attention",
        training="seq2seq.tasks.translation:TranslationTask",
        inference="seq2seq.translator:Translator",
        evaluate="seq2seq.evaluation.translation:evaluate",
        diagnose="seq2seq.evaluation.translation:diagnose",
        service="seq2seq.serving.translation:TranslationService",
        export="seq2seq.export.onnx:translation_graphs"),
    "classification": Head(
        task="classification", command="classify", model="classification model",
        description="many-to-one: a text classifier over the shared encoder",
        training="seq2seq.tasks.classification:ClassificationTask",
        inference="seq2seq.classifier:Classifier",
        evaluate="seq2seq.evaluation.classification:evaluate",
        diagnose="seq2seq.evaluation.classification:diagnose",
        service="seq2seq.serving.classification:ClassificationService",
        export="seq2seq.export.onnx:classification_graphs"),
    "language_model": Head(
        task="language_model", command="generate", model="language model",
        description="one-to-many: a language model / text generator, optionally conditioned",
        training="seq2seq.tasks.language_model:LanguageModelTask",
        inference="seq2seq.generator:Generator",
        evaluate="seq2seq.evaluation.language_model:evaluate",
        diagnose="seq2seq.evaluation.language_model:diagnose",
        service="seq2seq.serving.generation:GenerationService",
        export="seq2seq.export.onnx:language_model_graphs"),
}


def head_of(task: str, where: str = "") -> Head:
    """The head of ``task``; an unknown one is a UserError (naming ``where`` it was read)."""
    if task not in HEADS:
        raise UserError(f"{where + ': ' if where else ''}unknown task {task!r} "
                        f"(expected one of {', '.join(HEADS)})")
    return HEADS[task]
