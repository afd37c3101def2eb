"""The ONNX Runtime backend: an export folder's graphs behind the interfaces the PyTorch
models offer, so the same inference code (``Translator``, ``Classifier``, ``Generator``, the
searches in ``seq2seq.fast_search``) runs over them unchanged.

- ``OnnxTranslationModel``: ``encode`` and ``decode_step`` over the ``encoder`` and
  ``decoder_step`` graphs; the state is a ``DecoderState`` of torch tensors, so beam search
  reorders it exactly as it does PyTorch's.
- ``OnnxClassificationModel``: ``model(ids, lengths) -> logits``.
- ``OnnxLanguageModel``: ``initial_state``, ``model(tokens, state) -> (features, state)``,
  ``logits`` and ``decode_step``; its features are the graph's logits already, so ``logits``
  passes them on.

Tensors cross into ONNX Runtime as numpy arrays sharing the tensors' memory (CPU only).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import numpy as np
import torch

from ..config import Config
from ..errors import UserError
from ..heads import head_of
from ..models.decoder import DecoderState
from ..models.language_model import LMState
from ..run_directory import load_run_config
from .folder import ExportFolder
from .onnx import TRANSLATION_STATE


class Graph:
    """One ONNX Runtime session, checked against its manifest entry; runs on torch tensors."""

    def __init__(self, folder: ExportFolder, name: str) -> None:
        ort = _onnxruntime()
        path = folder.graph_path(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as configure_threads set it
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable graphs
            raise UserError(f"{path}: not a readable ONNX graph ({_first_line(err)})") from None
        entry = folder.graph(name)
        self.inputs = [t["name"] for t in entry["inputs"]]
        self.outputs = [t["name"] for t in entry["outputs"]]
        found = ([i.name for i in self.session.get_inputs()],
                 [o.name for o in self.session.get_outputs()])
        if sorted(found[0]) != sorted(self.inputs) or sorted(found[1]) != sorted(self.outputs):
            raise UserError(f"{path}: its inputs/outputs {found} are not those the manifest "
                            f"names ({self.inputs}, {self.outputs})")

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = {name: np.ascontiguousarray(inputs[name].detach().cpu().numpy())
                 for name in self.inputs}
        values = self.session.run(self.outputs, feeds)
        return {name: torch.from_numpy(value) for name, value in zip(self.outputs, values)}


def _onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running an ONNX export needs onnxruntime: "
                        "pip install 'seq2seq[onnx]'") from None
    return onnxruntime


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def open_export(path: str | Path, task: str, device: str, weights: Any) -> tuple[ExportFolder, Config]:
    """Check ``path`` is an export of a ``task`` model that can run here; return it and the
    run's config."""
    folder = ExportFolder(path)
    if folder.head != task:
        raise UserError(f"{folder.path} holds an exported {head_of(folder.head).model}, not a "
                        f"{head_of(task).model}")
    if weights is not None:
        raise UserError(f"{folder.path} is an ONNX export: its weights are in its graphs, "
                        "so --checkpoint does not apply")
    if device not in ("auto", "cpu"):
        raise UserError(f"{folder.path} is an ONNX export, run on the CPU by ONNX Runtime: "
                        f"--device {device} is not supported (use cpu or auto)")
    return folder, load_run_config(folder)


_M = TypeVar("_M", bound="_Module")


class _Module:
    """What inference code calls on a PyTorch model but means nothing for a graph."""

    def eval(self: _M) -> _M:
        return self

    def to(self: _M, device: torch.device) -> _M:
        if torch.device(device).type != "cpu":
            raise UserError("an ONNX export runs on the CPU")
        return self


class OnnxTranslationModel(_Module):
    """``TranslationModel.encode`` / ``decode_step`` over the exported graphs."""

    def __init__(self, folder: ExportFolder) -> None:
        self.encoder = Graph(folder, "encoder")
        self.step = Graph(folder, "decoder_step")
        self.names = [name for name in TRANSLATION_STATE if name in self.step.inputs]
        self.has_attention = "attention" in self.step.outputs

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> DecoderState:
        """[B, S] source ids and [B] lengths -> the decoder's initial state."""
        found = self.encoder(src=src, src_lengths=src_lengths)
        return DecoderState.from_named({name: found[name] for name in self.names})

    def decode_step(self, tokens: torch.Tensor, state: DecoderState
                    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """[N] previous tokens -> log-probabilities [N, V], new state, attention [N, S]."""
        found = self.step(tokens=tokens, **state.named())
        moved = DecoderState(found["hidden_out"], found.get("cell_out"), found.get("feed_out"),
                             state.source)
        return found["log_probs"], moved, found.get("attention")


class OnnxClassificationModel(_Module):
    """``ClassificationModel``'s forward (ids, lengths -> logits) over the exported graph."""

    def __init__(self, folder: ExportFolder) -> None:
        self.graph = Graph(folder, "classifier")
        self.num_classes = int(folder.graph("classifier")["outputs"][0]["shape"][-1])

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.graph(ids=ids, lengths=lengths)["logits"]


class OnnxLanguageModel(_Module):
    """``LanguageModel``'s initial_state / forward / logits / decode_step over the graphs."""

    def __init__(self, folder: ExportFolder) -> None:
        self.step = Graph(folder, "step")
        self.init = Graph(folder, "initial_state") if folder.has_graph("initial_state") else None
        hidden = folder.graph("step")["inputs"][1]["shape"]  # [layers, "batch", hidden]
        self.layers, self.hidden_size = int(hidden[0]), int(hidden[2])
        self.lstm = "cell" in self.step.inputs
        self.feeds_condition = "condition_vector" in self.step.inputs
        self.condition_dtype = (folder.graph("initial_state")["inputs"][0]["dtype"]
                                if self.init is not None else None)

    def initial_state(self, batch: int, condition: torch.Tensor | None = None,
                      device: torch.device | str | None = None) -> LMState:
        """The state before the first token: from the condition, or zeros."""
        if (condition is None) != (self.init is None):
            raise ValueError("a conditioned model needs a condition, an unconditioned one none")
        if self.init is None:
            zeros = torch.zeros(self.layers, batch, self.hidden_size)
            return LMState(zeros, zeros.clone() if self.lstm else None)
        assert condition is not None  # checked above: the model has an initial_state graph
        dtype = torch.long if self.condition_dtype == "int64" else torch.float32
        found = self.init(condition=condition.to(dtype))
        return LMState(found["hidden"], found.get("cell"), found.get("condition_vector"))

    def __call__(self, tokens: torch.Tensor, state: LMState | None = None,
                 condition: torch.Tensor | None = None) -> tuple[torch.Tensor, LMState]:
        """[B, T] tokens -> features (here: the logits) [B, T, V] and the state after them."""
        if state is None:
            state = self.initial_state(tokens.size(0), condition)
        found = self._run(tokens, state)
        return found["logits"], self._next(state, found)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def decode_step(self, tokens: torch.Tensor, state: LMState
                    ) -> tuple[torch.Tensor, LMState, None]:
        """[N] previous tokens -> log-probabilities [N, V] of the next, the new state, None."""
        found = self._run(tokens.unsqueeze(1), state)
        return found["log_probs"][:, 0], self._next(state, found), None

    def _run(self, tokens: torch.Tensor, state: LMState) -> dict[str, torch.Tensor]:
        inputs = {"tokens": tokens, "hidden": state.hidden}
        if self.lstm:
            assert state.cell is not None  # an LSTM's state has its cell
            inputs["cell"] = state.cell
        if self.feeds_condition:
            assert state.condition is not None  # so has a state fed its condition
            inputs["condition_vector"] = state.condition
        return self.step(**inputs)

    @staticmethod
    def _next(state: LMState, found: dict[str, torch.Tensor]) -> LMState:
        return replace(state, hidden=found["hidden_out"], cell=found.get("cell_out"))
