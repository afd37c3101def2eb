"""Read corpora (TSV, CSV, JSON Lines, parallel text files, Hugging Face hub) into ``datasets.Dataset``.

Files are streamed line by line into a memory-mapped Arrow cache with ``Dataset.from_generator``,
so a large corpus never sits in a Python list. Every line is decoded and checked as it is read, and
a mistake in a file surfaces as a one-line :class:`~seq2seq.errors.UserError` naming file and line.

Line numbers are 1-based and count every physical line of the file, the header included.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import datasets
import datasets.exceptions
import numpy as np
import pyarrow.compute as pc
from datasets.utils import logging as ds_logging

from seq2seq.errors import UserError

FORMATS = ("auto", "tsv", "csv", "jsonl", "text", "hub")

# Part of the cache fingerprint: bump when parsing changes, so old Arrow caches are not reused.
_PARSER_VERSION = 2

# Below this many input bytes, building the cache takes well under a second; progress bars are noise.
_QUIET_BELOW_BYTES = 32 * 1024 * 1024

_HASH_CHUNK = 1024 * 1024


@dataclass
class TextSource:
    """Where one split of a corpus lives and how to read it."""

    path: str  # a file; for format "text": a path prefix, files are f"{path}.{lang}"
    format: str = "auto"  # "auto" | "tsv" | "csv" | "jsonl" | "text" | "hub"
    fields: tuple[str | int, ...] = ()  # header/jsonl names or 0-based indices, one per output column
    header: bool = True  # tsv/csv: first line holds column names
    langs: tuple[str, ...] = ()  # format "text": file suffixes, one per output column, e.g. ("de", "en")
    hub_name: str | None = None  # format "hub": dataset name on the HF hub; path is then the split name
    hub_config: str | None = None


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def load_columns(
    source: TextSource,
    columns: tuple[str, ...],
    *,
    cache_dir: str | None = None,
    allow_empty: tuple[str, ...] = (),
    line_numbers: bool = False,
) -> datasets.Dataset:
    """Load ``source`` as a Dataset whose string columns are exactly ``columns``, in file order.

    ``source.fields[i]`` (or ``source.langs[i]`` for format "text") says where ``columns[i]`` comes
    from; without ``fields``, header/JSON names equal to ``columns`` (or indices 0, 1, ... for a
    headerless file) are used. Non-string values such as labels are converted with ``str()``.

    Rows are kept as they are, empty texts included: filtering is the caller's job. A row may lack
    the columns named in ``allow_empty`` altogether (a TSV/CSV row too short for them, a JSON object
    without the key or with null): they are read as "", so the caller can report or skip the row.

    With ``line_numbers``, an int64 column ``line`` gives each row's (first) line in its file, the
    header included; for a hub dataset, its 1-based row number.
    """
    columns = _check_columns(columns, allow_empty)
    fmt = resolve_format(source)
    if fmt == "hub":
        return _load_hub(source, columns, cache_dir, line_numbers)
    if fmt == "text":
        paths = _text_paths(source, columns)
        fields: tuple[str | int, ...] = ()
    else:
        paths = (os.fspath(source.path),)
        fields = _check_fields(source, fmt, columns)
    stamps = [_file_stamp(p) for p in paths]
    # Tuples only: datasets treats list values in gen_kwargs as shards to split between workers.
    gen_kwargs = {
        "fmt": fmt,
        "paths": tuple(paths),  # as given, so messages show the user's path
        "fields": tuple(fields),
        "header": bool(source.header),
        "columns": tuple(columns),
        "allow_empty": tuple(allow_empty),
        "line_numbers": bool(line_numbers),
        # Size, mtime and inode change whenever the file is rewritten or replaced, so they change
        # the datasets fingerprint and a stale Arrow cache is never served.
        "stamps": tuple(stamps),
        "parser_version": _PARSER_VERSION,
    }
    features = _features(columns, line_numbers)
    # from_generator cannot build a dataset with zero rows; reading up to the first row is cheap
    # and, when there is none, has already validated the whole file.
    if _is_empty(gen_kwargs):
        return datasets.Dataset.from_dict({c: [] for c in features}, features=features)
    quiet = sum(s[0] for s in stamps) < _QUIET_BELOW_BYTES
    with datasets_quiet(quiet), _unwrap_user_errors():
        return datasets.Dataset.from_generator(
            _generate_rows, gen_kwargs=gen_kwargs, features=features, cache_dir=cache_dir
        )


def column_array(dataset: datasets.Dataset, name: str) -> np.ndarray:
    """A scalar column as one numpy array, read from Arrow in bulk.

    (``dataset.with_format("numpy")[name]`` formats row by row: minutes for millions of rows.)
    """
    return np.asarray(dataset.with_format("arrow")[:].column(name).to_numpy(zero_copy_only=False))


def _features(columns: tuple[str, ...], line_numbers: bool) -> datasets.Features:
    features = {c: datasets.Value("string") for c in columns}
    if line_numbers:
        features["line"] = datasets.Value("int64")
    return datasets.Features(features)


def resolve_format(source: TextSource) -> str:
    """Return the concrete format of ``source``, inferring it from the file extension for "auto"."""
    fmt = source.format
    if fmt not in FORMATS:
        raise UserError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    if source.hub_name:
        return "hub"
    if source.langs:
        return "text"
    name = os.fspath(source.path).lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    for ext, inferred in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"),
                          (".json", "jsonl"), (".txt", "text")):
        if name.endswith(ext):
            return inferred
    raise UserError(
        f"{source.path}: cannot infer the format from the file name; set format to one of "
        "tsv, csv, jsonl, text, hub (or give langs for parallel text files)"
    )


def count_lines(path: str) -> int:
    """Number of lines as the loader sees them: a last line without a newline still counts."""
    path = os.fspath(path)
    _require_file(path)
    count = 0
    last = b"\n"
    with _open_binary(path) as f:
        for chunk in _read_chunks(path, f):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def file_fingerprint(path: str) -> str:
    """sha256 hex digest of the file's bytes (as stored, i.e. of the .gz itself), read in chunks."""
    path = os.fspath(path)
    _require_file(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Argument checks (before any file is read)
# ---------------------------------------------------------------------------------------------


def _check_columns(columns: Sequence[str], allow_empty: Sequence[str]) -> tuple[str, ...]:
    """Validate the requested output column names."""
    columns = tuple(columns)
    if not columns:
        raise UserError("columns: expected at least one column name, got none")
    if len(set(columns)) != len(columns):
        raise UserError(f"columns: names must be unique, got {', '.join(columns)}")
    unknown = [c for c in allow_empty if c not in columns]
    if unknown:
        raise UserError(f"allow_empty: {unknown[0]!r} is not one of the columns ({', '.join(columns)})")
    return columns


def _check_fields(source: TextSource, fmt: str, columns: tuple[str, ...]) -> tuple[str | int, ...]:
    """Return one field (name or index) per column, defaulting to the column names or positions."""
    fields = tuple(source.fields)
    if not fields:
        headerless = fmt in ("tsv", "csv") and not source.header
        return tuple(range(len(columns))) if headerless else columns
    if len(fields) != len(columns):
        raise UserError(
            f"{source.path}: fields: expected {len(columns)} entries (one per column: "
            f"{', '.join(columns)}), got {len(fields)}"
        )
    for field in fields:
        is_index = isinstance(field, int) and not isinstance(field, bool)
        if isinstance(field, int) and is_index and field < 0:
            raise UserError(f"{source.path}: fields: column indices are 0-based and "
                            f"non-negative, got {field}")
        if not is_index and not isinstance(field, str):
            raise UserError(f"{source.path}: fields: expected column names or 0-based indices, got {field!r}")
        if fmt == "jsonl" and is_index:
            raise UserError(f"{source.path}: fields: JSON Lines fields must be key names, got index {field}")
        if fmt in ("tsv", "csv") and not source.header and not is_index:
            raise UserError(
                f"{source.path}: fields: {field!r} is a column name but header is false; "
                "use 0-based column indices"
            )
    return fields


def _text_paths(source: TextSource, columns: tuple[str, ...]) -> tuple[str, ...]:
    """Files of a "text" source: ``path.lang`` per column, or ``path`` itself without langs."""
    prefix = os.fspath(source.path)
    if not source.langs:
        if len(columns) != 1:
            raise UserError(
                f"{prefix}: langs: a single text file gives one column, but {len(columns)} were "
                f"requested ({', '.join(columns)}); give one language suffix per column"
            )
        return (prefix,)
    if len(source.langs) != len(columns):
        raise UserError(
            f"{prefix}: langs: expected {len(columns)} suffixes (one per column: {', '.join(columns)}), "
            f"got {len(source.langs)}"
        )
    return tuple(f"{prefix}.{lang}" for lang in source.langs)


# ---------------------------------------------------------------------------------------------
# Low-level file access
# ---------------------------------------------------------------------------------------------


def _require_file(path: str) -> None:
    """Raise the standard message when a data file is missing."""
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (relative to the current directory, {os.getcwd()})"
        raise UserError(f"data file not found: {path}{where}")


def _file_stamp(path: str) -> tuple[int, int, int]:
    """(size, mtime_ns, inode) of an existing file; cheap identity for cache fingerprints."""
    _require_file(path)
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _open_binary(path: str) -> IO[bytes]:
    """Open a file for byte reading, transparently gunzipping ``*.gz``."""
    if path.lower().endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def _read_chunks(path: str, f: IO[bytes]) -> Iterator[bytes]:
    """Yield fixed-size chunks, turning gzip corruption into a UserError."""
    while True:
        try:
            chunk = f.read(_HASH_CHUNK)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: not a valid gzip file ({e})") from None
        if not chunk:
            return
        yield chunk


def _binary_lines(path: str) -> Iterator[bytes]:
    """Yield raw lines (split on b"\\n" only), turning gzip corruption into a UserError."""
    with _open_binary(path) as f:
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError, zlib.error) as e:
                raise UserError(f"{path}: not a valid gzip file ({e})") from None
            if not raw:
                return
            yield raw


def _decoded_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text with its line ending) decoding each line as UTF-8.

    Decoding per line, rather than through a text stream, is what lets a bad byte be reported
    with its line number.
    """
    for number, raw in enumerate(_binary_lines(path), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            column = len(raw[: e.start].decode("utf-8")) + 1
            raise UserError(
                f"{path} line {number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {column})"
            ) from None
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]  # a BOM from spreadsheet exports is not part of the first field
        yield number, line


def _strip_eol(line: str) -> str:
    """Remove one trailing "\\n" or "\\r\\n" (and nothing else: trailing spaces are data)."""
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    return line


# ---------------------------------------------------------------------------------------------
# Row generators (run inside datasets' builder; they must be module-level to be hashable)
# ---------------------------------------------------------------------------------------------


def _generate_rows(
    fmt: str,
    paths: tuple[str, ...],
    fields: tuple[str | int, ...],
    header: bool,
    columns: tuple[str, ...],
    allow_empty: tuple[str, ...],
    line_numbers: bool,
    stamps: tuple[tuple[int, int, int], ...],
    parser_version: int,
) -> Generator[dict[str, Any], None, None]:
    """Yield one ``{column: text}`` dict per example (``stamps`` and ``parser_version`` only
    feed the cache key)."""
    del stamps, parser_version
    rows: Iterator[tuple[int, dict[str, Any]]]
    if fmt == "text":
        rows = _text_rows(paths, columns)
    elif fmt == "tsv":
        rows = _delimited_rows(paths[0], _tsv_records(paths[0]), "tab", fields, header, columns,
                               allow_empty)
    elif fmt == "csv":
        rows = _delimited_rows(paths[0], _csv_records(paths[0]), "comma", fields, header, columns,
                               allow_empty)
    elif fmt == "jsonl":
        rows = _jsonl_rows(paths[0], fields, columns, allow_empty)
    else:  # resolve_format only returns the formats above
        raise AssertionError(f"unexpected format {fmt!r}")
    for number, row in rows:
        record: dict[str, Any] = row  # {column: text}, and the line number if asked
        if line_numbers:
            record["line"] = number
        yield record


def _tsv_records(path: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per line: split on tabs only, quotes are ordinary characters."""
    for number, line in _decoded_lines(path):
        yield number, _strip_eol(line).split("\t")


def _csv_records(path: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) per CSV record; quoted fields may span several lines."""
    reader = csv.reader(line for _, line in _decoded_lines(path))
    consumed = 0
    while True:
        start = consumed + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise UserError(f"{path} line {reader.line_num}: malformed CSV ({e})") from None
        consumed = reader.line_num
        yield start, record


def _delimited_rows(
    path: str,
    records: Iterator[tuple[int, list[str]]],
    separator: str,
    fields: Sequence[str | int],
    header: bool,
    columns: Sequence[str],
    allow_empty: Sequence[str] = (),
) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, column dict) per TSV/CSV record, checking that every row has the needed columns."""
    names: list[str] | None = None
    if header:
        first = next(records, None)
        if first is None:
            raise UserError(f"{path} line 1: expected a header line, but the file is empty")
        names = [name.strip() for name in first[1]]
    indices = [_field_index(path, field, names) for field in fields]
    needed = max((i for c, i in zip(columns, indices) if c not in allow_empty), default=-1) + 1
    for number, values in records:
        if len(values) < needed:
            raise UserError(
                f"{path} line {number}: expected at least {needed} {separator}-separated columns, "
                f"found {len(values)}"
            )
        if names is not None and len(values) > len(names):
            hint = " (a field holding a comma must be quoted)" if separator == "comma" else ""
            raise UserError(
                f"{path} line {number}: {len(values)} {separator}-separated fields, but the "
                f"header names {len(names)}{hint}"
            )
        yield number, {column: values[index] if index < len(values) else ""
                       for column, index in zip(columns, indices)}


def _field_index(path: str, field: str | int, names: list[str] | None) -> int:
    """Column position of ``field``: an index as given, or a name looked up in the header."""
    if isinstance(field, int):
        return field
    assert names is not None  # _check_fields rejects names for headerless files
    if field not in names:
        raise UserError(f"{path}: no column {field!r} in header (columns: {', '.join(names)})")
    return names.index(field)


def _jsonl_rows(path: str, fields: Sequence[str | int], columns: Sequence[str],
                allow_empty: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """One JSON object per line; blank lines are skipped since JSON Lines has no empty records."""
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(
                f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno}); "
                "expected one JSON object per line"
            ) from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {number}: expected a JSON object, found {type(obj).__name__}")
        yield number, {column: "" if column in allow_empty and obj.get(str(key)) is None
                       else _json_text(path, number, obj, str(key))
                       for column, key in zip(columns, fields)}


def _json_text(path: str, number: int, obj: dict[str, Any], key: str) -> str:
    """The value of ``key`` as text; only strings and scalars make sense as a column value."""
    if key not in obj:
        raise UserError(f"{path} line {number}: no key {key!r} (keys: {', '.join(map(str, obj))})")
    value = obj[key]
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise UserError(
        f"{path} line {number}: key {key!r} holds {json.dumps(value)[:40]}, expected a string or number"
    )


def _text_rows(paths: Sequence[str], columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Zip parallel line-per-example files, requiring the same number of lines in each."""
    streams = [_decoded_lines(p) for p in paths]
    while True:
        lines = [next(s, None) for s in streams]
        ended = [line is None for line in lines]
        if all(ended):
            return
        if any(ended):
            _raise_line_count_mismatch(paths)
        yield lines[0][0], {column: _strip_eol(line[1]) for column, line in zip(columns, lines)}  # type: ignore[index]


def _raise_line_count_mismatch(paths: Sequence[str]) -> None:
    """Report the first file whose line count differs from the first file's."""
    counts = [count_lines(p) for p in paths]
    for path, count in zip(paths[1:], counts[1:]):
        if count != counts[0]:
            raise UserError(f"{paths[0]} has {counts[0]} lines but {path} has {count}")
    raise AssertionError("line counts differ while reading but not when counted")


def _is_empty(gen_kwargs: dict[str, Any]) -> bool:
    """True when the source yields no row at all (reading stops at the first row otherwise)."""
    rows = _generate_rows(**gen_kwargs)
    try:
        return next(rows, None) is None
    finally:
        rows.close()


# ---------------------------------------------------------------------------------------------
# datasets integration
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def datasets_quiet(quiet: bool) -> Iterator[None]:
    """Silence datasets' progress bars and info logging, restoring the caller's settings after."""
    if not quiet:
        yield
        return
    bars_were_disabled = datasets.are_progress_bars_disabled()
    verbosity = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(verbosity)
        if not bars_were_disabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _unwrap_user_errors() -> Iterator[None]:
    """Re-raise a UserError from our generator that datasets wrapped in DatasetGenerationError."""
    try:
        yield
    except datasets.exceptions.DatasetGenerationError as e:
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def _load_hub(source: TextSource, columns: tuple[str, ...], cache_dir: str | None,
              line_numbers: bool = False) -> datasets.Dataset:
    """Load a hub dataset split and map its fields onto ``columns`` as strings."""
    name = source.hub_name
    if not name:
        raise UserError(f"hub_name: format 'hub' needs a dataset name (split {source.path!r})")
    label = f"hub dataset {name!r}" + (f" (config {source.hub_config!r})" if source.hub_config else "")
    try:
        ds = datasets.load_dataset(name, source.hub_config, split=source.path, cache_dir=cache_dir)
    except Exception as e:  # offline, unknown name, bad split...: all fixable by the user
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"could not load {label}, split {source.path!r}: {detail}") from None
    names = list(ds.column_names)
    fields = tuple(source.fields) or columns
    keys = []
    for field in fields:
        if isinstance(field, int):
            if not 0 <= field < len(names):
                raise UserError(f"{label}: no column index {field} (columns: {', '.join(names)})")
            field = names[field]
        if field not in names:
            raise UserError(f"{label}: no column {field!r} (columns: {', '.join(names)})")
        keys.append(field)
    if len(keys) != len(columns):
        raise UserError(f"{label}: fields: expected {len(columns)} entries, got {len(keys)}")
    with datasets_quiet(len(ds) < 100_000):
        return ds.map(
            _stringify_batch,
            batched=True,
            with_indices=True,
            fn_kwargs={"keys": keys, "columns": list(columns), "line_numbers": line_numbers},
            remove_columns=names,
            features=_features(columns, line_numbers),
        )


def _stringify_batch(batch: dict[str, list[Any]], indices: list[int], keys: list[str], columns: list[str],
                     line_numbers: bool = False) -> dict[str, list[Any]]:
    """Copy hub fields into the output columns as strings (labels are often ints; null is "")."""
    out: dict[str, list[Any]] = {
        c: [v if isinstance(v, str) else "" if v is None else str(v) for v in batch[k]]
        for c, k in zip(columns, keys)}
    if line_numbers:
        out["line"] = [i + 1 for i in indices]
    return out


def is_blank(column: Any) -> np.ndarray:
    """[N] bool: which strings of an Arrow column are empty or only whitespace."""
    stripped = pc.utf8_trim_whitespace(column)
    return np.asarray(pc.equal(stripped, "").to_numpy(zero_copy_only=False), dtype=bool)
