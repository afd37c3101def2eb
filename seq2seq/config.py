"""Typed experiment configuration: one YAML file -> nested dataclasses, validated.

A config names its ``task`` (translation | classification | language_model) and has the
sections ``data``, ``tokenizer``, ``model``, ``training``, ``decoding`` (translation),
``generation`` (language models) and ``evaluation``; keys that only one task reads say so.
Every key is typed; an unknown key, a wrong type or a value outside its choices raises
:class:`UserError` naming the key (``model.encoder.cell``) and what is valid. The comment
beside each key is its documentation (docs/configuration.md is generated from them).
Command-line overrides (``--set model.encoder.hidden_size=512``) go through the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import UserError

Task = Literal["translation", "classification", "language_model"]
Cell = Literal["rnn", "gru", "lstm"]
Field = Union[str, int]  # a column name (header / JSON key) or a 0-based column index
# Mixed precision on or off; ``auto``: on CUDA (float16), and on a CPU where timing the
# model's matrix products finds bfloat16 at least 10 % faster than float32 (seq2seq/precision.py).
Switch = Union[bool, Literal["auto"]]

# Metrics each task computes at validation; ``auto`` picks the first.
TASK_METRICS = {
    "translation": ("bleu", "chrf", "loss", "ppl"),
    "classification": ("accuracy", "macro_f1", "loss"),
    "language_model": ("ppl", "loss", "bpc"),
}


@dataclass
class DataConfig:
    """Where the corpus lives and how to read it.

    Columns are named by header name or 0-based index (TSV/CSV), by key (JSON Lines), or, for
    a plain-text pair, by file suffix (``src: de`` reads ``train.de``). A plain text file
    (``format: text``) is one example per line, or one continuous stream for a language model.
    """

    train: str = ""  # training data: a file (or a plain-text pair's prefix, or a hub split)
    dev: str = ""  # validation data (language models and classifiers may use dev_fraction)
    test: str = ""  # held-out data for `seq2seq evaluate` and reports
    format: Literal["auto", "tsv", "csv", "jsonl", "text", "hub"] = "auto"  # auto: by file suffix
    header: bool = True  # tsv/csv: the first line names the columns
    hub_name: str = ""  # format hub: a Hugging Face datasets name (needs network access)
    hub_config: str = ""  # format hub: the dataset's configuration name
    # translation
    src: Field = "src"  # translation: the source column (or, for a plain-text pair, suffix)
    trg: Field = "trg"  # translation: the target column (or suffix)
    max_src_length: int = 100  # in tokens; longer sentences are truncated (and counted)
    max_trg_length: int = 100  # in tokens; longer targets are truncated (and counted)
    dev_max_sentences: int = 0  # validate on the first N dev sentences (0 = all)
    # classification and language modelling
    text: Field = "text"  # the text column (not used for plain text files)
    label: Field = "label"  # classification: the label column
    condition: Field = ""  # language model: the column that conditions generation ("" = none)
    max_length: int = 256  # classification: tokens kept per text; language model (lines): per line
    truncation: Literal["head", "tail", "head_tail"] = "head"  # which part of a long text to keep
    bad_rows: Literal["error", "skip"] = "error"  # empty text, label or pair side: stop, or skip and count
    # language modelling
    lm_mode: Literal["stream", "lines"] = "stream"  # one running text (truncated BPTT) or separate lines
    bptt: int = 128  # stream mode: tokens per training window; the state carries across windows
    dev_fraction: float = 0.0  # no dev file: hold out this last fraction of train (0.1 = nanoGPT's split)


@dataclass
class TokenizerConfig:
    kind: Literal["sentencepiece", "char", "word"] = "sentencepiece"  # subwords, characters or words
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece: its algorithm
    vocab_size: int = 8000  # at most this many ids, the 4 specials included
    joint: bool = True  # one vocabulary for source and target (needed to share embeddings)
    min_freq: int = 1  # char/word: drop rarer symbols
    lowercase: bool = False  # lowercase all text first
    max_sentences: int = 1_000_000  # sentencepiece trains on at most this many sentences
    add_vector_words: bool = False  # word: also take the words of model.pretrained_embeddings


@dataclass
class EncoderConfig:
    cell: Cell = "gru"  # the recurrent cell
    hidden_size: int = 256  # per direction
    layers: int = 1  # stacked layers
    bidirectional: bool = True  # read both ways (not for a language model)
    dropout: float = 0.2  # between layers


@dataclass
class DecoderConfig:
    cell: Cell = "gru"  # the recurrent cell
    hidden_size: int = 512  # the decoder's state size
    layers: int = 1  # stacked layers
    attention: Literal["none", "bahdanau", "luong"] = "bahdanau"  # none: the final state only
    luong_score: Literal["dot", "general", "concat"] = "general"  # attention luong: the score
    input_feeding: bool = True  # feed the last attentional vector to the next step
    attentional_output: Literal["linear", "tanh"] = "linear"  # a_t from [h_t; c_t]: W [h; c]
        # with no squashing, as OpenNMT-py does, or tanh(W [h; c]) as in Luong et al. (2015),
        # which learns much more slowly (BENCHMARKS.md)
    bridge: bool = True  # learned map from the encoder's final state to the decoder's first
    dropout: float = 0.2  # between layers


@dataclass
class ClassifierConfig:
    """Classification head: pool the encoder states over time, then a linear layer or an MLP."""

    pooling: Literal["last", "mean", "max", "attention"] = "max"  # how states become one vector
    hidden_size: int = 0  # 0 = one linear layer over the pooled vector; > 0 = an MLP with this hidden layer
    dropout: float = 0.3  # on the pooled vector (and the MLP's hidden layer)


@dataclass
class LanguageModelConfig:
    """Language-model head: the encoder run left to right, predicting the next token."""

    condition_type: Literal["label", "features"] = "label"  # what data.condition holds
    condition_mode: Literal["init", "input", "both"] = "init"  # first state, every step's input, or both
    condition_size: int = 64  # size of the learned label embedding (features: their projection)
    locked_dropout: bool = False  # one dropout mask per sequence, shared by all steps (variational)


@dataclass
class ModelConfig:
    embedding_size: int = 256  # token embedding size (every embedding of the model)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # shared by all three heads
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # translation
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # classification
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)  # LM head
    embedding_dropout: float = 0.2  # on the embedded tokens
    output_dropout: float = 0.2  # before the output layer
    tie_embeddings: bool = False  # decoder input embedding = output projection
    share_embeddings: bool = False  # source embedding = target embedding (joint vocabulary)
    init_from: str = ""  # classification: a language-model or classifier run to start from
    pretrained_embeddings: str = ""  # classification, language model: word vectors (text format)
    freeze_embeddings: bool = False  # keep the pretrained (or init_from) embedding fixed in training


@dataclass
class TrainingConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # Adam and AdamW run fused
    learning_rate: float = 1e-3  # the base rate (> 0)
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw)
    momentum: float = 0.0  # sgd, in [0, 1)
    adam_betas: tuple[float, float] = (0.9, 0.999)  # adam/adamw, each in [0, 1)
    scheduler: Literal["constant", "plateau", "inverse_sqrt", "exponential"] = "constant"  # lr decay
    warmup_steps: int = 0  # linear warm-up from 0 (any scheduler)
    decay_factor: float = 0.5  # plateau: lr *= factor; exponential: per validation
    scheduler_patience: int = 2  # plateau: validations without improvement before decaying
    min_learning_rate: float = 1e-6  # decay stops here
    batch_size: int = 64  # sentences per batch (used when batch_tokens is 0)
    batch_tokens: int = 0  # token budget per batch (source or target, whichever is longer)
    max_epochs: int = 20  # passes over the training data at most
    max_steps: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # stop after this much training time (0 = no limit)
    clip_grad_norm: float = 5.0  # 0 = no clipping
    label_smoothing: float = 0.0  # in [0, 1)
    class_weights: Literal["none", "balanced"] = "none"  # classification: weigh rare classes up
    teacher_forcing: float = 1.0  # probability of feeding the gold token
    teacher_forcing_min: float = 1.0  # scheduled sampling: decays linearly to this ...
    teacher_forcing_decay_steps: int = 0  # ... over this many steps (0 = constant)
    validate_every: int = 500  # steps; 0 = once per epoch
    checkpoint_every: int = 0  # steps; 0 = at every validation
    log_every: int = 100  # steps between training log rows (metrics.jsonl)
    max_nonfinite_updates: int = 5  # a non-finite loss or gradient skips its update;
        # this many in a row stop training
    early_stopping_metric: Literal["auto", "loss", "ppl", "bpc", "bleu", "chrf", "accuracy",
                                   "macro_f1"] = "auto"  # auto: bleu | accuracy | ppl by task
    patience: int = 0  # stop after this many validations without improvement (0 = never)
    keep_best: int = 1  # best checkpoints kept on disk
    keep_last: int = 1  # resumable checkpoints kept on disk
    average_best: int = 0  # final model = average of this many best checkpoints (0/1 = best)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision (float16) on CUDA
    cpu_amp: Switch = False  # mixed precision (bfloat16) on CPU; auto: where measured faster
    onednn: Switch = "auto"  # float32 CPU products in oneDNN, not ATen's; auto: where measured faster
    num_threads: int = 0  # CPU threads (0 = the cores other processes leave free)
    seed: int = 42  # data order, initial weights, dropout: the same seed, the same run


@dataclass
class DecodingConfig:
    beam_size: int = 5  # 1 = greedy
    length_penalty: float = 1.0  # GNMT alpha; 0 = none
    max_length_ratio: float = 1.5  # hypotheses end at ratio * source length (+ max_length_extra)
    max_length_extra: int = 5  # (see max_length_ratio)
    min_length: int = 0  # no </s> before this many tokens
    no_repeat_ngram: int = 0  # > 0: never repeat an n-gram of this size
    n_best: int = 1  # hypotheses returned per sentence (<= beam_size)
    batch_size: int = 64  # sentences per decoding batch ...
    batch_tokens: int = 0  # ... or, if > 0, at most this many source tokens (padding included)
    amp: Switch = False  # mixed precision: bfloat16 on CPU (auto: where measured faster), float16 on CUDA
    onednn: Switch = "auto"  # search: oneDNN products at any batch size; auto: where measured faster


@dataclass
class GenerationConfig:
    """Language-model sampling defaults (each is also a ``seq2seq generate`` option)."""

    max_tokens: int = 200  # tokens generated at most
    temperature: float = 1.0  # > 0; lower is more conservative
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # nucleus sampling; 1 = no filter
    greedy: bool = False  # the most probable token at every step
    beam_size: int = 1  # > 1: beam search for the most probable continuations
    num_samples: int = 1  # texts generated


@dataclass
class EvaluationConfig:
    metrics: tuple[str, ...] = ("bleu", "chrf", "ter")  # any of bleu, chrf, ter
    tokenize: str = "13a"  # sacrebleu BLEU tokenizer
    lowercase: bool = False  # score lowercased text


@dataclass
class Config:
    task: Task = "translation"
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


# --------------------------------------------------------------------------------------
# Loading, overriding, validating


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML file, apply ``key.path=value`` overrides, validate, return a Config."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides or []:
        apply_override(raw, item)
    source = str(path)
    if overrides:  # a bad value may come from either: name both
        source += " with " + " ".join(f"--set {item}" for item in overrides)
    return config_from_dict(raw, source=source)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` override (value parsed as YAML) to a raw config dict."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. model.encoder.hidden_size=512")
    dotted, value_text = item.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {dotted}: {key!r} is not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(value_text) if value_text.strip() else ""


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    config = _build(Config, raw, prefix="", source=source)
    validate(config, source)
    if config.training.early_stopping_metric == "auto":  # the run's config.yaml says which
        config.training.early_stopping_metric = TASK_METRICS[config.task][0]
    return config


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "top level"
        raise UserError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            section = prefix.rstrip(".") or "top level"
            raise UserError(
                f"{source}: unknown key {prefix}{key!s} in {section} (valid: {', '.join(names)})"
            )
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the type ``hint``; return it converted (int -> float, list -> tuple)."""
    origin = get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".", source)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise UserError(
                f"{source}: {key} = {value!r} is not valid (choices: {', '.join(map(str, choices))})"
            )
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(hint):
            try:
                return _coerce(option, value, key, source)
            except UserError:
                continue
        names = " or ".join(_type_name(o) for o in get_args(hint))
        raise UserError(f"{source}: {key} = {value!r} should be {names}")
    if origin is tuple:
        args = get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: {key} should be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key, source) for v in value)
        if len(value) != len(args):
            raise UserError(f"{source}: {key} should be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, key, source) for a, v in zip(args, value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise UserError(f"{source}: {key} = {value!r} should be a finite number")
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    raise UserError(f"{source}: {key} = {value!r} should be {_type_name(hint)}")


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(choice) for choice in get_args(hint))
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _check(condition: bool, source: str, message: str) -> None:
    if not condition:
        raise UserError(f"{source}: {message}")


# Settings only some heads read: (section, key or None for the whole section) -> those heads.
# A new run setting one for another head is refused (``check_settings_used``), not ignored.
HEAD_ONLY_SETTINGS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("data", "src"): ("translation",), ("data", "trg"): ("translation",),
    ("data", "max_src_length"): ("translation",), ("data", "max_trg_length"): ("translation",),
    ("data", "text"): ("classification", "language_model"),
    ("data", "label"): ("classification",),
    ("data", "condition"): ("language_model",),
    ("data", "max_length"): ("classification", "language_model"),
    ("data", "truncation"): ("classification",),
    ("data", "lm_mode"): ("language_model",), ("data", "bptt"): ("language_model",),
    ("data", "dev_fraction"): ("classification", "language_model"),
    ("model", "decoder"): ("translation",), ("model", "share_embeddings"): ("translation",),
    ("model", "classifier"): ("classification",), ("model", "init_from"): ("classification",),
    ("model", "language_model"): ("language_model",),
    ("model", "pretrained_embeddings"): ("classification", "language_model"),
    ("training", "class_weights"): ("classification",),
    ("training", "teacher_forcing"): ("translation",),
    ("training", "teacher_forcing_min"): ("translation",),
    ("training", "teacher_forcing_decay_steps"): ("translation",),
    ("decoding", None): ("translation",),
    ("generation", None): ("language_model",),
}


def check_settings_used(config: Config, source: str = "config") -> None:
    """A new run's config sets nothing that only another head reads (it would be ignored)."""
    default = Config()
    for (section, key), heads in HEAD_ONLY_SETTINGS.items():
        if config.task in heads:
            continue
        name = section if key is None else f"{section}.{key}"
        value, unset = getattr(config, section), getattr(default, section)
        if key is not None:
            value, unset = getattr(value, key), getattr(unset, key)
        if value != unset:
            raise UserError(f"{source}: {name} is not used by a {config.task} model (only by "
                            f"{' and '.join(heads)}); remove it")


def validate(config: Config, source: str = "config") -> None:
    """Cross-field checks that single types cannot express."""
    d, m, t = config.data, config.model, config.training
    for key in ("max_src_length", "max_trg_length", "max_length", "bptt"):
        _check(getattr(d, key) >= 1, source, f"data.{key} must be >= 1")
    _check(0.0 <= d.dev_fraction < 1.0, source, "data.dev_fraction must be in [0, 1)")
    _check(config.tokenizer.vocab_size >= 5, source, "tokenizer.vocab_size must be >= 5")
    _check(m.embedding_size >= 1, source, "model.embedding_size must be >= 1")
    for part in ("encoder", "decoder"):
        sub = getattr(m, part)
        _check(sub.hidden_size >= 1, source, f"model.{part}.hidden_size must be >= 1")
        _check(sub.layers >= 1, source, f"model.{part}.layers must be >= 1")
        _check(0.0 <= sub.dropout < 1.0, source, f"model.{part}.dropout must be in [0, 1)")
    for key in ("embedding_dropout", "output_dropout"):
        _check(0.0 <= getattr(m, key) < 1.0, source, f"model.{key} must be in [0, 1)")
    _check(0.0 <= m.classifier.dropout < 1.0, source, "model.classifier.dropout must be in [0, 1)")
    _check(m.classifier.hidden_size >= 0, source, "model.classifier.hidden_size must be >= 0")
    _check(m.language_model.condition_size >= 1, source,
           "model.language_model.condition_size must be >= 1")
    if m.pretrained_embeddings:
        _check(config.task != "translation", source,
               "model.pretrained_embeddings is for the classification and language_model tasks")
        _check(not m.init_from, source, "model.pretrained_embeddings and model.init_from both "
               "set the embedding: give one of them")
    if m.freeze_embeddings:
        _check(config.task != "translation" and bool(m.pretrained_embeddings or m.init_from),
               source, "model.freeze_embeddings: true needs model.pretrained_embeddings or "
               "model.init_from (a classification or language_model task)")
    if config.tokenizer.add_vector_words:
        _check(config.tokenizer.kind == "word" and bool(m.pretrained_embeddings), source,
               "tokenizer.add_vector_words: true needs tokenizer.kind: word and "
               "model.pretrained_embeddings")
    if m.share_embeddings:
        _check(config.tokenizer.joint, source,
               "model.share_embeddings: true needs tokenizer.joint: true (one vocabulary)")
    {"translation": _validate_translation, "classification": _validate_classification,
     "language_model": _validate_language_model}[config.task](config, source)

    metrics = TASK_METRICS[config.task]
    _check(t.early_stopping_metric in ("auto", *metrics), source,
           f"training.early_stopping_metric = {t.early_stopping_metric!r} is not computed for "
           f"task {config.task} (choices: auto, {', '.join(metrics)})")
    _check(t.learning_rate > 0, source, "training.learning_rate must be > 0")
    _check(t.weight_decay >= 0, source, "training.weight_decay must be >= 0")
    _check(0 <= t.momentum < 1, source, "training.momentum must be in [0, 1)")
    _check(all(0 <= b < 1 for b in t.adam_betas), source,
           "training.adam_betas must be two numbers in [0, 1), e.g. [0.9, 0.999]")
    _check(t.warmup_steps >= 0, source, "training.warmup_steps must be >= 0")
    _check(0 < t.decay_factor <= 1, source, "training.decay_factor must be in (0, 1]")
    _check(t.scheduler_patience >= 0, source, "training.scheduler_patience must be >= 0")
    _check(t.min_learning_rate >= 0, source, "training.min_learning_rate must be >= 0")
    for key in ("max_steps", "max_minutes", "patience", "validate_every", "checkpoint_every",
                "average_best", "num_threads", "teacher_forcing_decay_steps"):
        _check(getattr(t, key) >= 0, source, f"training.{key} must be >= 0 (0 = off)")
    _check(t.max_nonfinite_updates >= 1, source, "training.max_nonfinite_updates must be >= 1")
    _check(0 <= t.seed < 2**32, source, "training.seed must be in [0, 2^32)")
    _check(t.batch_size >= 1 or t.batch_tokens >= 1, source,
           "training.batch_size or training.batch_tokens must be >= 1")
    _check(t.batch_tokens >= 0, source, "training.batch_tokens must be >= 0 (0: use batch_size)")
    _check(0.0 <= t.label_smoothing < 1.0, source, "training.label_smoothing must be in [0, 1)")
    _check(0.0 <= t.teacher_forcing <= 1.0, source, "training.teacher_forcing must be in [0, 1]")
    _check(0.0 <= t.teacher_forcing_min <= 1.0, source,
           "training.teacher_forcing_min must be in [0, 1]")
    _check(t.max_epochs >= 1, source, "training.max_epochs must be >= 1")
    _check(t.clip_grad_norm >= 0, source, "training.clip_grad_norm must be >= 0")
    _check(t.keep_best >= 1 and t.keep_last >= 1, source,
           "training.keep_best and training.keep_last must be >= 1")
    _check(t.average_best <= t.keep_best, source,
           f"training.average_best ({t.average_best}) cannot exceed keep_best ({t.keep_best})")
    _check(t.log_every >= 1, source, "training.log_every must be >= 1")

    dec = config.decoding
    _check(dec.beam_size >= 1, source, "decoding.beam_size must be >= 1")
    _check(1 <= dec.n_best <= dec.beam_size, source,
           "decoding.n_best must be between 1 and decoding.beam_size")
    _check(dec.max_length_ratio > 0, source, "decoding.max_length_ratio must be > 0")
    _check(dec.length_penalty >= 0, source, "decoding.length_penalty must be >= 0 (0 = none)")
    for key in ("max_length_extra", "min_length", "no_repeat_ngram"):
        _check(getattr(dec, key) >= 0, source, f"decoding.{key} must be >= 0")
    _check(dec.batch_size >= 1, source, "decoding.batch_size must be >= 1")
    _check(dec.batch_tokens >= 0, source, "decoding.batch_tokens must be >= 0 (0: use batch_size)")
    gen = config.generation
    _check(gen.max_tokens >= 1, source, "generation.max_tokens must be >= 1")
    _check(gen.temperature > 0, source, "generation.temperature must be > 0")
    _check(0.0 < gen.top_p <= 1.0, source, "generation.top_p must be in (0, 1]")
    _check(gen.top_k >= 0, source, "generation.top_k must be >= 0 (0 = off)")
    _check(gen.beam_size >= 1 and gen.num_samples >= 1, source,
           "generation.beam_size and generation.num_samples must be >= 1")
    _check(d.dev_max_sentences >= 0, source, "data.dev_max_sentences must be >= 0 (0 = all)")
    _check(config.tokenizer.min_freq >= 1, source, "tokenizer.min_freq must be >= 1")
    _check(config.tokenizer.max_sentences >= 1, source, "tokenizer.max_sentences must be >= 1")
    tokenizers = sacrebleu_tokenizers()
    _check(config.evaluation.tokenize in tokenizers, source,
           f"evaluation.tokenize = {config.evaluation.tokenize!r} is not a sacrebleu tokenizer "
           f"(choices: {', '.join(tokenizers)})")
    valid_metrics = {"bleu", "chrf", "ter"}
    for name in config.evaluation.metrics:
        _check(name in valid_metrics, source,
               f"evaluation.metrics: {name!r} is not valid (choices: bleu, chrf, ter)")


def sacrebleu_tokenizers() -> tuple[str, ...]:
    """The names sacrebleu's BLEU accepts for ``tokenize`` (13a, intl, zh, char, ...)."""
    from sacrebleu import BLEU

    return tuple(BLEU.TOKENIZERS)


def _validate_translation(config: Config, source: str) -> None:
    m = config.model
    enc_out = m.encoder.hidden_size * (2 if m.encoder.bidirectional else 1)
    if not m.decoder.bridge and m.encoder.cell != m.decoder.cell:
        _check(False, source, "model.decoder.bridge: false needs the same cell in encoder "
                              "and decoder (or set bridge: true)")
    if not m.decoder.bridge:
        _check(enc_out == m.decoder.hidden_size and m.encoder.layers == m.decoder.layers,
               source, f"model.decoder.bridge: false needs encoder output size ({enc_out}) "
                       f"and layers to equal the decoder's ({m.decoder.hidden_size}); "
                       "set bridge: true")
    if m.decoder.attention == "luong" and m.decoder.luong_score == "dot":
        _check(enc_out == m.decoder.hidden_size, source,
               f"model.decoder.luong_score: dot needs encoder output size ({enc_out}) == "
               f"decoder hidden_size ({m.decoder.hidden_size}); use general or concat")
    if m.tie_embeddings:
        _check(m.embedding_size == m.decoder.hidden_size, source,
               f"model.tie_embeddings: true needs embedding_size ({m.embedding_size}) == "
               f"decoder.hidden_size ({m.decoder.hidden_size})")


def _validate_classification(config: Config, source: str) -> None:
    _check(config.data.text != config.data.label, source,
           "data.text and data.label name the same column")


def _validate_language_model(config: Config, source: str) -> None:
    m = config.model
    _check(not m.encoder.bidirectional, source,
           "model.encoder.bidirectional must be false for a language model "
           "(it predicts each token from the ones before it)")
    if m.tie_embeddings:
        _check(m.embedding_size == m.encoder.hidden_size, source,
               f"model.tie_embeddings: true needs embedding_size ({m.embedding_size}) == "
               f"encoder.hidden_size ({m.encoder.hidden_size})")
    if config.data.condition != "":
        _check(config.data.lm_mode == "lines", source,
               "data.condition needs data.lm_mode: lines (one conditioned text per row)")


def _to_plain(value: Any) -> Any:
    """Tuples -> lists so the YAML dump is plain and loads back identically."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
