"""Trained models -> ONNX graphs that any runtime can drive, one folder per run.

Translation: ``encoder`` (source ids and lengths -> the decoder's initial state) and
``decoder_step`` (previous tokens and the state -> next-token log-probabilities, the new
state and the attention weights), so a runtime writes its own greedy or beam search.
Classification: ``classifier`` (ids and lengths -> probabilities). Language model: ``step``
(tokens [batch, steps] and the state -> log-probabilities and the new state; steps = 1 while
generating, the whole prompt to read one), and for a conditioned model ``initial_state``.
Batch, source and step counts are dynamic axes.

The exporter: torch 2.13's ``torch.onnx.export`` defaults to the dynamo exporter (graphs
captured with ``torch.export``). It cannot capture the encoder: ``pack_padded_sequence``
makes the RNN's batch sizes data-dependent and ``torch.export`` fails on them
(``nn.LSTM.forward`` builds its zero state from them), and without packing a bidirectional
encoder would read the padding of short sentences. The TorchScript exporter
(``dynamo=False``) turns a packed RNN into ONNX's RNN/GRU/LSTM operator with its
``sequence_lens`` input, which skips each row's padding in both directions as PyTorch does,
and keeps batch and source length dynamic. So every graph here is exported with it, at
opset ``OPSET``. It has no conversion for the fused ``gru_cell``/``rnn_tanh_cell`` the decoder
steps with in PyTorch, so the step graphs run the same weights through the decoder's own
``nn.RNN``/``nn.GRU``/``nn.LSTM`` module for one time step; the equivalence tests check that
this gives the same numbers as ``decode_step``.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import Config
from ..heads import head_of
from ..models.classification import ClassificationModel
from ..models.decoder import DecoderState
from ..models.language_model import LanguageModel, LMState
from ..models.translation import TranslationModel
from ..tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from .folder import FORMAT, FORMAT_VERSION, graph_entry, tensor_entry

OPSET = 17

# The translator's decoder state as graph tensors, in this order (those a model has).
TRANSLATION_STATE = DecoderState.NAMES

# A graph to export: (module, example inputs, manifest entry).
GraphSpec = tuple[nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]


# ---- translation ---------------------------------------------------------------------

def translation_state_names(model: TranslationModel) -> list[str]:
    """The state tensors ``model`` carries: hidden, cell (LSTM), feed (input feeding),
    memory/keys/mask (attention)."""
    decoder = model.decoder
    present = {"hidden": True, "cell": decoder.cell == "lstm", "feed": decoder.feeds,
               "memory": decoder.attention is not None, "keys": decoder.attention is not None,
               "mask": decoder.attention is not None}
    return [name for name in TRANSLATION_STATE if present[name]]


class TranslationEncoderGraph(nn.Module):
    """src [B, S], src_lengths [B] -> the state tensors of ``translation_state_names``
    (without attention, then the encoder states ``memory``, which no step reads)."""

    def __init__(self, model: TranslationModel) -> None:
        super().__init__()
        self.model = model
        self.names = translation_state_names(model)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        if model.decoder.attention is not None:
            state = model.encode(src, src_lengths)
            named = state.named()
            return tuple(named[name] for name in self.names)
        # ``encode`` without its attention part. Its encoder states would feed nothing, and
        # the TorchScript exporter fails on a packed GRU or RNN whose outputs go unused (an
        # index error in its ONNX peephole pass), so they are an output of the graph.
        memory, final = model.encoder(model.src_embed(src), src_lengths)
        h, c = (final, None) if model.encoder.cell != "lstm" else final
        hidden, cell = model.bridge(model.encoder.merge_directions(h),
                                    None if c is None else model.encoder.merge_directions(c))
        return (hidden, memory) if cell is None else (hidden, cell, memory)


class TranslationStepGraph(nn.Module):
    """tokens [B] and the state -> log_probs [B, V], the new recurrent state (hidden, cell,
    feed) and attention [B, S]: ``TranslationModel.decode_step`` with the first layers' input
    run through the decoder's ``nn.RNNBase`` for one step (see the module docstring)."""

    def __init__(self, model: TranslationModel) -> None:
        super().__init__()
        self.model = model
        self.names = translation_state_names(model)

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        decoder = self.model.decoder
        given = DecoderState.from_named(dict(zip(self.names, state)))
        embedded = self.model.trg_embed(tokens)
        x = embedded
        if decoder.feeds:
            assert given.feed is not None  # in the state when the decoder feeds
            x = torch.cat([embedded, given.feed], dim=-1)
        hx = given.hidden if given.cell is None else (given.hidden, given.cell)
        top, final = decoder.rnn(x.unsqueeze(1), hx)  # [B, 1, H]
        output, weights = decoder.readout(top, given)
        output = output.squeeze(1)
        log_probs = F.log_softmax(self.model.logits(output).float(), dim=-1)
        hidden, cell = (final, None) if given.cell is None else final
        outputs = [log_probs, hidden]
        if cell is not None:
            outputs.append(cell)
        if decoder.feeds:
            outputs.append(output)
        if weights is not None:
            outputs.append(weights.squeeze(1))
        return tuple(outputs)


def translation_graphs(model: TranslationModel) -> dict[str, GraphSpec]:
    """name -> (module, example inputs, manifest entry) for a translator's two graphs."""
    decoder = model.decoder
    hidden, layers = decoder.hidden_size, decoder.layers
    memory_size = model.encoder.output_size
    key_size = (decoder.attention.project_memory(torch.zeros(1, 1, memory_size)).size(-1)
                if decoder.attention is not None else 0)
    shapes: dict[str, tuple[str, list[str | int], str]] = {
        "hidden": ("float32", [layers, "batch", hidden], "decoder hidden state, every layer"),
        "cell": ("float32", [layers, "batch", hidden], "LSTM cell state, every layer"),
        "feed": ("float32", ["batch", hidden], "the previous attentional vector (input feeding)"),
        "memory": ("float32", ["batch", "source", memory_size], "encoder states"),
        "keys": ("float32", ["batch", "source", key_size], "attention keys of the memory"),
        "mask": ("bool", ["batch", "source"], "true at real source tokens"),
    }
    names = translation_state_names(model)
    state = [tensor_entry(n, shapes[n][0], shapes[n][1], shapes[n][2]) for n in names]
    src = _example_ids(model.src_embed.num_embeddings, 2, 4)
    src[0, 3], src[1, 1:] = EOS_ID, torch.tensor([EOS_ID, PAD_ID, PAD_ID])
    lengths = torch.tensor([4, 2])
    encoder_inputs = [
        tensor_entry("src", "int64", ["batch", "source"], "source ids ending in </s>, padded"),
        tensor_entry("src_lengths", "int64", ["batch"], "true lengths, </s> included, >= 1"),
    ]
    unread = ([] if decoder.attention is not None else
              [tensor_entry("memory", "float32", ["batch", "source", memory_size],
                            "encoder states; no attention reads them")])
    encoder = graph_entry("encoder.onnx", encoder_inputs, state + unread,
                          "source ids -> the decoder's initial state")
    with torch.no_grad():
        initial = TranslationEncoderGraph(model)(src, lengths)[: len(names)]
    recurrent = [n for n in ("hidden", "cell", "feed") if n in names]
    step_outputs = [tensor_entry("log_probs", "float32", ["batch", model.output_layer.out_features],
                                 "next-token log-probabilities")]
    step_outputs += [tensor_entry(f"{n}_out", shapes[n][0], shapes[n][1], f"the new {n}")
                     for n in recurrent]
    if decoder.attention is not None:
        step_outputs.append(tensor_entry("attention", "float32", ["batch", "source"],
                                         "attention weights over the source"))
    step_inputs = [tensor_entry("tokens", "int64", ["batch"], "the previous tokens (<s> first)")]
    step = graph_entry("decoder_step.onnx", step_inputs + state, step_outputs,
                       "one decoder step")
    tokens = torch.tensor([BOS_ID, BOS_ID])
    return {"encoder": (TranslationEncoderGraph(model), (src, lengths), encoder),
            "decoder_step": (TranslationStepGraph(model), (tokens, *initial), step)}


# ---- classification ------------------------------------------------------------------

class ClassifierGraph(nn.Module):
    """ids [B, S], lengths [B] -> logits [B, C], probabilities [B, C], states [B, S, D].

    The encoder's states are an output because ``last`` pooling reads only the final state,
    and the TorchScript exporter fails on a packed GRU or RNN whose outputs go unused (see
    ``TranslationEncoderGraph``); they are the text's contextual token vectors."""

    def __init__(self, model: ClassificationModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        states, final = model.encoder(model.embedding(ids), lengths)
        mask = torch.arange(ids.size(1))[None, :] < lengths[:, None]
        logits = model.classifier(model.pool(states, final, mask)).float()
        return logits, torch.softmax(logits, dim=-1), states


def classification_graphs(model: ClassificationModel) -> dict[str, GraphSpec]:
    classes = model.num_classes
    entry = graph_entry(
        "classifier.onnx",
        [tensor_entry("ids", "int64", ["batch", "length"], "token ids (no </s>), padded"),
         tensor_entry("lengths", "int64", ["batch"], "true lengths, >= 1")],
        [tensor_entry("logits", "float32", ["batch", classes]),
         tensor_entry("probabilities", "float32", ["batch", classes],
                      "column c is labels.json's label c"),
         tensor_entry("states", "float32", ["batch", "length", model.encoder.output_size],
                      "the encoder's states (zero at padding)")],
        "token ids -> class probabilities")
    ids = _example_ids(model.embedding.num_embeddings, 2, 3)
    ids[1, 1:] = PAD_ID
    return {"classifier": (ClassifierGraph(model), (ids, torch.tensor([3, 1])), entry)}


# ---- language model ------------------------------------------------------------------

def lm_state_names(model: LanguageModel) -> list[str]:
    return (["hidden"] + (["cell"] if model.cell == "lstm" else [])
            + (["condition_vector"] if model.feeds_condition else []))


class LMStepGraph(nn.Module):
    """tokens [B, T] and the state -> logits, log_probs [B, T, V] and the new hidden (cell)."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model
        self.names = lm_state_names(model)

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = dict(zip(self.names, state))
        lm_state = LMState(given["hidden"], given.get("cell"), given.get("condition_vector"))
        features, new = self.model(tokens, lm_state)
        logits = self.model.logits(features).float()
        outputs = [logits, F.log_softmax(logits, dim=-1), new.hidden]
        if new.cell is not None:
            outputs.append(new.cell)
        return tuple(outputs)


class LMInitialStateGraph(nn.Module):
    """condition ([B] label ids or [B, D] features) -> the state before the first token."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model
        self.names = lm_state_names(model)

    def forward(self, condition: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = self.model.initial_state(condition.size(0), condition, condition.device)
        found = {"hidden": state.hidden, "cell": state.cell, "condition_vector": state.condition}
        outputs = []
        for name in self.names:
            tensor = found[name]
            assert tensor is not None  # lm_state_names lists the tensors this model has
            outputs.append(tensor)
        return tuple(outputs)


def language_model_graphs(model: LanguageModel) -> dict[str, GraphSpec]:
    layers, hidden = model.layers, model.hidden_size
    vocab = model.output_layer.out_features
    shapes: dict[str, list[str | int]] = {"hidden": [layers, "batch", hidden],
                                          "cell": [layers, "batch", hidden]}
    if model.feeds_condition:
        assert model.condition is not None  # a model fed a condition has its encoder
        size = model.condition(_example_condition(model)).size(-1)
        shapes["condition_vector"] = ["batch", size]
    names = lm_state_names(model)
    state = [tensor_entry(n, "float32", shapes[n]) for n in names]
    step_outputs = [tensor_entry("logits", "float32", ["batch", "steps", vocab]),
                    tensor_entry("log_probs", "float32", ["batch", "steps", vocab])]
    step_outputs += [tensor_entry(f"{n}_out", "float32", shapes[n])
                     for n in ("hidden", "cell") if n in names]
    step = graph_entry(
        "step.onnx",
        [tensor_entry("tokens", "int64", ["batch", "steps"], "the previous tokens")] + state,
        step_outputs, "tokens -> next-token scores at every position, and the new state")
    tokens = _example_ids(model.embedding.num_embeddings, 2, 3)
    graphs: dict[str, GraphSpec] = {}
    if model.condition is not None:
        condition = _example_condition(model)
        kind = model.condition.kind
        entry = graph_entry(
            "initial_state.onnx",
            [tensor_entry("condition", "int64" if kind == "label" else "float32",
                          ["batch"] if kind == "label" else ["batch", model.condition.inputs],
                          "label ids (conditions.json order)" if kind == "label"
                          else "feature vectors")],
            state, "the condition -> the state before the first token")
        graphs["initial_state"] = (LMInitialStateGraph(model), (condition,), entry)
        with torch.no_grad():
            example_state = LMInitialStateGraph(model)(condition)
    else:
        example_state = tuple(torch.zeros(layers, 2, hidden) for _ in names)
    graphs["step"] = (LMStepGraph(model), (tokens, *example_state), step)
    return graphs


def _example_ids(vocabulary: int, rows: int, columns: int) -> torch.Tensor:
    """[rows, columns] ordinary token ids (past the special ones) of a ``vocabulary``: the
    values the graphs are traced with, which their dynamic axes free them from."""
    ordinary = max(vocabulary - 4, 1)
    return (torch.arange(rows * columns) % ordinary + 4).clamp(max=vocabulary - 1).view(rows, columns)


def _example_condition(model: LanguageModel) -> torch.Tensor:
    assert model.condition is not None  # called for conditioned models only
    if model.condition.kind == "label":
        return torch.tensor([0, model.condition.inputs - 1])
    return torch.zeros(2, model.condition.inputs)


# ---- writing -------------------------------------------------------------------------

def export_graphs(model: nn.Module, task: str, directory: Path) -> dict[str, dict[str, Any]]:
    """Write the graphs of ``model``, a ``task`` model, into ``directory``; return their
    manifest entries. The head table names each head's graphs function."""
    model.eval()
    entries = {}
    for name, (module, example, entry) in head_of(task).load("export")(model).items():
        write_graph(module, example, directory / entry["file"], entry)
        entries[name] = entry
    return entries


def write_graph(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path,
                entry: dict[str, Any]) -> None:
    """Trace ``module`` on ``example`` and write it with the names and dynamic axes of its
    manifest ``entry``."""
    # The exporter runs the module in eval mode and then puts back the mode it found: a wrapper
    # left in training mode would switch the model it wraps to training mode too.
    module.eval()
    tensors = entry["inputs"] + entry["outputs"]
    dynamic = {t["name"]: {axis: size for axis, size in enumerate(t["shape"])
                           if isinstance(size, str)} for t in tensors}
    with torch.no_grad(), warnings.catch_warnings(), _native_warnings_dropped():
        # The TorchScript exporter warns that it is deprecated, and the tracer that values
        # such as sequence lengths are read from tensors: both are expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=[t["name"] for t in entry["inputs"]],
                          output_names=[t["name"] for t in entry["outputs"]],
                          dynamic_axes={k: v for k, v in dynamic.items() if v},
                          do_constant_folding=True)


@contextmanager
def _native_warnings_dropped() -> Iterator[None]:
    """The exporter's C++ passes print warnings straight to file descriptor 2 (no shape
    inference for packed sequences: expected, and the equivalence tests check the graphs);
    they are dropped so ``seq2seq export`` prints one line. Errors still raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def manifest_for(config: Config, graphs: dict[str, dict[str, Any]],
                 files: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an export: what a runtime needs besides the graphs themselves."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "head": config.task,
        "seq2seq_version": __version__,
        "exporter": "torch.onnx (TorchScript)",
        "opset": OPSET,
        "graphs": graphs,
        "special_tokens": {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        "files": files,
    }
    if config.task == "translation":
        d = config.decoding
        manifest["decoding"] = {
            "beam_size": d.beam_size, "length_penalty": d.length_penalty,
            "max_length_ratio": d.max_length_ratio, "max_length_extra": d.max_length_extra,
            "min_length": d.min_length, "no_repeat_ngram": d.no_repeat_ngram,
            "max_src_length": config.data.max_src_length}
    elif config.task == "classification":
        manifest["classification"] = {"max_length": config.data.max_length,
                                      "truncation": config.data.truncation}
    else:
        g = config.generation
        manifest["generation"] = {
            "max_tokens": g.max_tokens, "temperature": g.temperature, "top_k": g.top_k,
            "top_p": g.top_p, "greedy": g.greedy, "beam_size": g.beam_size,
            "lm_mode": config.data.lm_mode}
    return manifest

