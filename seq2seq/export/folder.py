"""The export folder: what ``seq2seq export`` writes, and the one place that reads it back.

    EXPORT_DIR/
      manifest.json        format name and version, head, graphs with their inputs and
                           outputs, special token ids, decoding/generation defaults
      README.md            how to drive the graphs from any runtime
      config.yaml          the run's resolved config (what the Python backend reads)
      *.onnx               the graphs the manifest names (see ``seq2seq.export.onnx``)
      <side>.json|.model   tokenizer files, as in the run directory
      labels.json | conditions.json   a classifier's labels, a conditioned LM's conditions

The folder is written as a whole (a temporary folder renamed into place), so a crash leaves
the old export or the new one. Reading checks the manifest and that every graph it names is
there; a missing or damaged file is a one-line :class:`UserError` naming it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import OUTPUT_FILES, atomic_directory, foreign_entries
from ..heads import head_of
from ..run_directory import CONFIG_FILE, RUN_FILE, read_json

FORMAT = "seq2seq-onnx"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
README_FILE = "README.md"
MANIFEST_KEYS = ("format", "format_version", "head", "seq2seq_version", "opset", "graphs",
                 "special_tokens")


# What seq2seq writes into an export folder (``eval`` by ``seq2seq evaluate``, temporaries by
# atomic writes); --overwrite refuses a folder holding anything else.
EXPORT_ENTRIES = re.compile(
    r"(manifest\.json|README\.md|config\.yaml|labels\.json|conditions\.json|"
    r"(joint|src|trg|text)\.(json|model)|[^/]+\.onnx(\.data)?|eval|\..*\.tmp|\.partial_.*)")


def is_export_dir(path: str | Path) -> bool:
    """True for a folder with no run.json that holds a manifest.json or a graph: an export
    (perhaps a damaged one, which reading it then reports), not a run directory."""
    path = Path(path)
    if not path.is_dir() or (path / RUN_FILE).exists():
        return False
    return (path / MANIFEST_FILE).exists() or any(path.glob("*.onnx"))


def check_output(output: Path, overwrite: bool) -> None:
    """Before any work: ``output`` may be written. An existing folder is replaced only with
    ``overwrite``, and only if it is empty or an earlier export holding nothing seq2seq did not
    write (never a user's own folder or files)."""
    if not output.exists() and not output.is_symlink():
        return
    if not overwrite:
        raise UserError(f"--output {output} already exists; add --overwrite to replace it")
    if output.is_symlink() or not output.is_dir():
        raise UserError(f"--output {output}: is not a folder; not replacing it")
    if any(output.iterdir()) and not is_export_dir(output):
        raise UserError(f"--output {output}: not an export folder (no {MANIFEST_FILE}); "
                        "not replacing it, choose another --output")
    foreign = foreign_entries(output, EXPORT_ENTRIES, {"eval": OUTPUT_FILES})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(f"--output {output}: holds files seq2seq did not write ({shown}); "
                        "move them away or choose another --output")


@contextmanager
def export_directory(output: Path) -> Iterator[Path]:
    """A temporary folder beside ``output`` to fill; it replaces ``output`` as a whole when
    the block ends without an exception, and is removed otherwise."""
    with atomic_directory(output, prefix=".partial_export_") as tmp:
        yield tmp


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """manifest.json in a folder being filled (``export_directory`` makes it durable)."""
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")


def copy_files(source: Path, directory: Path, names: list[str]) -> None:
    """Copy the named files that exist in ``source`` (tokenizer, labels) into ``directory``."""
    for name in names:
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)


class ExportFolder:
    """An export folder opened for reading: its checked manifest and the paths it names."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = self._read_manifest()

    @property
    def head(self) -> str:
        return self.manifest["head"]

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    def graph(self, name: str) -> dict[str, Any]:
        """The manifest's entry of graph ``name`` (file, inputs, outputs)."""
        return self.manifest["graphs"][name]

    def has_graph(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    def graph_path(self, name: str) -> Path:
        return self.path / self.graph(name)["file"]

    def _read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST_FILE
        if not self.path.is_dir():
            raise UserError(f"export folder not found: {self.path}")
        manifest = read_json(path, dict)
        missing = [key for key in MANIFEST_KEYS if key not in manifest]
        if manifest.get("format") != FORMAT:
            raise UserError(f"{path}: not a seq2seq ONNX manifest (format "
                            f"{manifest.get('format')!r}, expected {FORMAT!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{path}: export format version {manifest.get('format_version')!r} "
                            f"is not supported by this seq2seq (reads {FORMAT_VERSION})")
        if missing:
            raise UserError(f"{path}: manifest lacks {', '.join(missing)}")
        head_of(str(manifest["head"]), str(path))
        graphs = manifest["graphs"]
        if not isinstance(graphs, dict) or not all(
                isinstance(g, dict) and isinstance(g.get("file"), str)
                and isinstance(g.get("inputs"), list) and isinstance(g.get("outputs"), list)
                for g in graphs.values()):
            raise UserError(f"{path}: 'graphs' must map names to {{file, inputs, outputs}}")
        for name, graph in graphs.items():
            file = self.path / graph["file"]
            if not file.is_file():
                raise UserError(f"{self.path}: missing {graph['file']} (the {name} graph "
                                f"{MANIFEST_FILE} names)")
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: missing {CONFIG_FILE}")
        return manifest


def graph_entry(file: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                description: str) -> dict[str, Any]:
    """A manifest entry: the graph's file and its named, typed, shaped inputs and outputs."""
    return {"file": file, "description": description, "inputs": inputs, "outputs": outputs}


def tensor_entry(name: str, dtype: str, shape: list[str | int], description: str = ""
                 ) -> dict[str, Any]:
    """One input or output: name, element type and shape (strings name dynamic axes)."""
    entry: dict[str, Any] = {"name": name, "dtype": dtype, "shape": shape}
    if description:
        entry["description"] = description
    return entry

