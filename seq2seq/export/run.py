"""A trained run directory -> a self-contained ONNX export folder (``seq2seq export``)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..config import Config, dump_config
from ..errors import UserError
from ..heads import head_of
from ..pretrained import open_run, weights_path
from ..run_directory import (
    CONDITIONS_FILE,
    CONFIG_FILE,
    LABELS_FILE,
    LOCK_FILE,
    RunDirectory,
    tokenizer_names,
)
from .folder import README_FILE, check_output, copy_files, export_directory, write_manifest
from .readme import readme_text


def export_run(run_dir: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Write the ONNX export of the trained model in ``run_dir`` to the folder ``output``."""
    run_dir, output = Path(run_dir), Path(output)
    _require_onnx()
    run, config = open_run(run_dir)
    weights_path(run)  # a run without a trained model yet is refused here
    _refuse_while_training(run)
    check_output(output, overwrite)
    if output.resolve() == run.path.resolve() or run.path.resolve() in output.resolve().parents:
        raise UserError(f"--output {output}: inside the run directory; choose a folder outside it")
    loaded = head_of(config.task).load("inference").from_pretrained(run.path, device="cpu")
    return write_export(loaded.model, config, run.path, output)


def write_export(model: nn.Module, config: Config, source: Path, output: Path) -> Path:
    """The graphs of ``model``, its config, and the tokenizer/labels/conditions files found
    in ``source`` -> the export folder ``output`` (written as a whole)."""
    from .onnx import export_graphs, manifest_for

    tokenizers = sorted({name for side in tokenizer_names(config)
                         for name in (f"{side}.json", f"{side}.model")})
    with export_directory(output) as tmp:
        graphs = export_graphs(model, config.task, tmp)
        (tmp / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
        copy_files(source, tmp, [*tokenizers, LABELS_FILE, CONDITIONS_FILE])
        files = {"config": CONFIG_FILE,
                 "tokenizers": [name for name in tokenizers if (tmp / name).is_file()]}
        for key, name in (("labels", LABELS_FILE), ("conditions", CONDITIONS_FILE)):
            if (tmp / name).is_file():
                files[key] = name
        manifest = manifest_for(config, graphs, files)
        write_manifest(tmp, manifest)
        (tmp / README_FILE).write_text(readme_text(manifest), encoding="utf-8")
    return output


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx writes its graphs with it)
    except ImportError:
        raise UserError("exporting to ONNX needs the onnx package: "
                        "pip install 'seq2seq[onnx]'") from None


def _refuse_while_training(run: RunDirectory) -> None:
    """A run that a process is training has no final model yet: refuse it (the lock says)."""
    if not (run.path / LOCK_FILE).exists():
        return
    try:
        run.lock().release()
    except UserError as err:
        raise UserError(f"cannot export a run that is not finished: {err}") from None
