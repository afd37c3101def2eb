"""The ``seq2seq`` command line: train, translate, evaluate.

Every user mistake surfaces as ``error: <one line>`` on stderr and exit status 2, never a
traceback; Ctrl-C during training saves a checkpoint first (exit status 130).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import __version__
from .config import Config, dump_config, load_config
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Recurrent sequence models: train, translate and evaluate.")
console = Console(stderr=True, soft_wrap=True)  # long lines stay whole in logs

COMPATIBLE_SECTIONS = ("task", "tokenizer", "model")  # must not change on --resume
COMPATIBLE_DATA_KEYS = ("src", "trg", "max_src_length", "max_trg_length")


def user_errors(command):
    """Turn UserError into a one-line message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as err:
            console.print(f"[red]error:[/red] {err}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


# ---------------------------------------------------------------------------------- train

@app.command()
@user_errors
def train(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="Experiment YAML file."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o",
                                           help="Where the run is written [runs/<name>]."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override: section.key=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run first."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a model from a YAML config (the task is named in the config)."""
    from .runtime import ProcessInfo, configure_threads, seed_everything, select_device
    from .training.checkpoint import RunDirectory
    from .training.trainer import Trainer

    config = load_config(config_path, overrides)
    if device:
        config.training.device = device
    run = RunDirectory(run_dir or Path("runs") / config.name)
    process = ProcessInfo.from_environment()
    if resume:
        run.read_run_info()
        check_resumable(run, config)
    elif run.has_training():
        if not overwrite:
            raise UserError(f"{run.path} already holds a training run: pass --resume to continue "
                            "it or --overwrite to start again")
        shutil.rmtree(run.path)
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    torch_device = select_device(config.training.device)
    threads = configure_threads(config.training.num_threads)
    seed_everything(config.training.seed)
    console.print(f"seq2seq {__version__}: {config.task} '{config.name}' -> {run.path} "
                  f"on {torch_device} ({threads} threads)")
    try:
        task = build_task(config, run, resume, torch_device, process)
        if not resume and process.is_main:
            from .training.checkpoint import atomic_write_text
            atomic_write_text(run.config_path, dump_config(config))
            write_signature(run, config)
            run.write_run_info(config.task, __version__)
    except BaseException:
        if created and not resume:  # never leave a half-made run directory behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    if resume:
        from .training.checkpoint import atomic_write_text
        atomic_write_text(run.config_path, dump_config(config))
    params = sum(p.numel() for p in task.model.parameters())
    console.print(f"model: {params:,} parameters")
    trainer = Trainer(task, config.training, run, torch_device, console, process,
                      show_progress=not quiet)
    if resume:
        trainer.resume()
    state = trainer.train()
    console.print(f"done: {state.step} steps, best {config.training.early_stopping_metric} "
                  f"{state.best_score:.2f} at step {state.best_step}; model: {run.model_path}")


def build_task(config: Config, run, resume: bool, device, process):
    if config.task == "translation":
        from .tasks.translation import TranslationTask
        return TranslationTask.setup(config, run, resume, device, console, process)
    raise UserError(f"task {config.task!r} is not available yet in this version "
                    "(available: translation)")


def check_resumable(run, config: Config) -> None:
    """--resume must not change what the saved weights and tokenizers mean."""
    from .translator import load_run_config

    saved, new = load_run_config(run).to_dict(), config.to_dict()
    changed = [f"{section}.{key}" for section in COMPATIBLE_SECTIONS if section != "task"
               for key in _diff(saved[section], new[section])]
    if saved["task"] != new["task"]:
        changed.append("task")
    changed += [f"data.{key}" for key in COMPATIBLE_DATA_KEYS if saved["data"][key] != new["data"][key]]
    if changed:
        raise UserError(f"--resume with a changed config: {', '.join(changed)} differ from "
                        f"{run.config_path}; start a new run (--run-dir) to change them")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


def write_signature(run, config: Config) -> None:
    """Keep sacrebleu's signatures (metric settings + version) with the run."""
    from .evaluation import score_translations
    from .training.checkpoint import atomic_write_text

    e = config.evaluation
    scores = score_translations(["x"], ["x"], ("bleu", "chrf", "ter"), e.tokenize, e.lowercase)
    lines = [f"{name}: {score.signature}" for name, score in scores.items()]
    atomic_write_text(run.path / "sacrebleu_signature.txt", "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------ translate

def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; a decoding error names the line."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    lines = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as err:
                raise UserError(f"{path} line {number}: not valid UTF-8 (byte "
                                f"0x{raw[err.start]:02x} at column {err.start + 1})") from None
    return lines


def read_stdin() -> list[str]:
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"standard input line {line}: not valid UTF-8") from None


@app.command()
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
    sentences: Optional[list[str]] = typer.Argument(None, help="Sentences to translate."),
    input_file: Optional[Path] = typer.Option(None, "--input", "-i",
                                              help="One sentence per line [stdin]."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write here [stdout]."),
    beam_size: Optional[int] = typer.Option(None, help="1 = greedy [config]."),
    n_best: Optional[int] = typer.Option(None, help="Hypotheses per sentence, with scores."),
    length_penalty: Optional[float] = typer.Option(None, help="GNMT alpha [config]."),
    max_length_ratio: Optional[float] = typer.Option(None, help="Output length / source."),
    min_length: Optional[int] = typer.Option(None, help="Minimum output tokens."),
    no_repeat_ngram: Optional[int] = typer.Option(None, help="Block repeated n-grams."),
    batch_size: Optional[int] = typer.Option(None, help="Sentences per batch."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Translate sentences from arguments, a file or stdin; one output line per input line."""
    from .runtime import configure_threads
    from .translator import Translator

    configure_threads(0)
    if sentences:
        lines = list(sentences)
    elif input_file:
        lines = read_lines(input_file)
    else:
        lines = read_stdin()
    translator = Translator.from_pretrained(run_dir, device=device, weights=checkpoint)
    results = translator.translate(
        lines, beam_size=beam_size, n_best=n_best, length_penalty=length_penalty,
        max_length_ratio=max_length_ratio, min_length=min_length,
        no_repeat_ngram=no_repeat_ngram, batch_size=batch_size)
    if translator.truncated:
        console.print(f"note: {translator.truncated} sentence(s) longer than "
                      f"{translator.config.data.max_src_length} tokens were truncated")
    if n_best is None:
        text = "".join(line + "\n" for line in results)
    else:
        text = "".join(f"{i}\t{t.score:.4f}\t{t.text}\n"
                       for i, hyps in enumerate(results) for t in hyps)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


# ------------------------------------------------------------------------------- evaluate

@app.command()
@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory made by `seq2seq train`."),
    src: Optional[Path] = typer.Option(None, help="Source sentences, one per line."),
    ref: Optional[Path] = typer.Option(None, help="Reference translations, one per line."),
    split: str = typer.Option("test", help="Config data split when --src/--ref are not given."),
    beam_size: Optional[int] = typer.Option(None, help="1 = greedy [config]."),
    length_penalty: Optional[float] = typer.Option(None, help="GNMT alpha [config]."),
    batch_size: Optional[int] = typer.Option(None, help="Sentences per batch."),
    output_dir: Optional[Path] = typer.Option(None, help="Where metrics.json and the "
                                              "hypotheses go [RUN_DIR/eval/<split or file>]."),
    checkpoint: Optional[Path] = typer.Option(None, help="Weights to use [model.safetensors]."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
) -> None:
    """Translate a test set and score it with sacrebleu (BLEU, chrF, TER)."""
    from .data.corpus import load_parallel
    from .evaluation import score_translations
    from .runtime import configure_threads
    from .training.checkpoint import atomic_write_text
    from .translator import Translator

    configure_threads(0)
    translator = Translator.from_pretrained(run_dir, device=device, weights=checkpoint)
    config = translator.config
    if (src is None) != (ref is None):
        raise UserError("give both --src and --ref, or neither (to use the config's data split)")
    if src is not None:
        sources, references = read_lines(src), read_lines(ref)
        if len(sources) != len(references):
            raise UserError(f"{src} has {len(sources)} lines but {ref} has {len(references)}")
        name = src.stem
    else:
        if split not in ("train", "dev", "test"):
            raise UserError(f"--split {split!r} is not valid (choices: train, dev, test)")
        texts = load_parallel(config.data, split, drop_empty=False)
        sources, references = texts["src"], texts["trg"]
        name = split
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam_size=beam_size,
                                      length_penalty=length_penalty, batch_size=batch_size)
    seconds = time.perf_counter() - started
    decoding = translator.decoding_config(beam_size=beam_size, length_penalty=length_penalty,
                                          batch_size=batch_size)
    scores = score_translations(hypotheses, references, config.evaluation.metrics,
                                config.evaluation.tokenize, config.evaluation.lowercase)
    for score in scores.values():
        typer.echo(f"{score.text}")
        typer.echo(f"  signature: {score.signature}")
    typer.echo(f"{len(sources)} sentences in {seconds:.1f} s ({len(sources) / max(seconds, 1e-9):.1f} "
               f"sentences/s), beam {decoding.beam_size}")
    out = output_dir or Path(run_dir) / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "data": str(src) if src else f"{split}: {getattr(config.data, split)}",
        "sentences": len(sources),
        **{k: round(s.value, 4) for k, s in scores.items()},
        "signatures": {k: s.signature for k, s in scores.items()},
        "decoding": {"beam_size": decoding.beam_size, "length_penalty": decoding.length_penalty,
                     "max_length_ratio": decoding.max_length_ratio},
        "seconds": round(seconds, 3),
        "truncated": translator.truncated,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "hypotheses.txt", "".join(h + "\n" for h in hypotheses))
    console.print(f"wrote {out / 'metrics.json'}")


@app.command()
def version() -> None:
    """Print the seq2seq version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
