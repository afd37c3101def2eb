"""Tests for seq2seq.data.loading: every input format, order, caching and each user-facing error."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import datasets
import pytest

from seq2seq.data import loading
from seq2seq.data.loading import TextSource, count_lines, file_fingerprint, load_columns
from seq2seq.errors import UserError


def _write(path: Path, text: str) -> str:
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def _load(tmp_path: Path, source: TextSource, columns: tuple[str, ...]) -> datasets.Dataset:
    return load_columns(source, columns, cache_dir=str(tmp_path / "cache"))


def _rows(ds: datasets.Dataset) -> list[tuple[str, ...]]:
    return list(zip(*(ds[c] for c in ds.column_names)))


def _error(tmp_path: Path, source: TextSource, columns: tuple[str, ...]) -> str:
    with pytest.raises(UserError) as info:
        _load(tmp_path, source, columns)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- formats ---------------------------------------------------------------------------------


def test_tsv_named_fields_in_any_order(tmp_path):
    path = _write(tmp_path / "train.tsv", 'es\ten\n"Hola"\tHello "you"\nAdiós\tBye\n')
    ds = _load(tmp_path, TextSource(path, fields=("en", "es")), ("src", "trg"))
    assert ds.column_names == ["src", "trg"]
    assert _rows(ds) == [('Hello "you"', '"Hola"'), ("Bye", "Adiós")]


def test_tsv_default_fields_are_column_names(tmp_path):
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\ngood \t1\nbad \t0\n")
    ds = _load(tmp_path, TextSource(path), ("sentence", "label"))
    assert _rows(ds) == [("good ", "1"), ("bad ", "0")]  # trailing space is data


def test_tsv_headerless_with_indices_and_crlf(tmp_path):
    path = _write(tmp_path / "pairs.tsv", "a\tx\t0\r\nb\ty\t1\r\n")
    ds = _load(tmp_path, TextSource(path, fields=(2, 0), header=False), ("label", "text"))
    assert _rows(ds) == [("0", "a"), ("1", "b")]


def test_tsv_keeps_empty_fields(tmp_path):
    path = _write(tmp_path / "e.tsv", "src\ttrg\n\tonly target\nonly source\t\n")
    ds = _load(tmp_path, TextSource(path), ("src", "trg"))
    assert _rows(ds) == [("", "only target"), ("only source", "")]


def test_csv_quoted_commas_quotes_and_newlines(tmp_path):
    text = (
        "id,rating,label,text\n"
        '0,9,pos,"Great, really ""great"" film."\n'
        '1,2,neg,"Line one\nline two, still the same review"\n'
        "2,8,pos,plain\n"
    )
    path = _write(tmp_path / "imdb.csv", text)
    ds = _load(tmp_path, TextSource(path, fields=("text", "label")), ("text", "label"))
    assert _rows(ds) == [
        ('Great, really "great" film.', "pos"),
        ("Line one\nline two, still the same review", "neg"),
        ("plain", "pos"),
    ]


def test_csv_gz(tmp_path):
    path = tmp_path / "train.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write('label,text\n1,"a, b"\n0,c\n')
    ds = _load(tmp_path, TextSource(str(path), fields=("text", "label")), ("text", "label"))
    assert _rows(ds) == [("a, b", "1"), ("c", "0")]


def test_tsv_gz_and_format_inference(tmp_path):
    path = tmp_path / "x.tsv.gz"
    with gzip.open(path, "wb") as f:
        f.write("a\tb\nα\tβ\n".encode())
    assert loading.resolve_format(TextSource(str(path))) == "tsv"
    assert _rows(_load(tmp_path, TextSource(str(path)), ("a", "b"))) == [("α", "β")]


def test_jsonl_with_non_string_labels(tmp_path):
    lines = [{"text": "yes", "label": 1}, {"text": "no", "label": 0, "extra": [1]}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = _load(tmp_path, TextSource(path), ("text", "label"))
    assert _rows(ds) == [("yes", "1"), ("no", "0")]
    assert ds.features["label"].dtype == "string"


def test_text_pair(tmp_path):
    _write(tmp_path / "train.de", "Hallo Welt\nzwei\n\n")
    _write(tmp_path / "train.en", "Hello world\ntwo\n\n")
    source = TextSource(str(tmp_path / "train"), langs=("de", "en"))
    ds = _load(tmp_path, source, ("src", "trg"))
    assert _rows(ds) == [("Hallo Welt", "Hello world"), ("zwei", "two"), ("", "")]


def test_single_text_file_keeps_leading_space_and_last_line(tmp_path):
    path = _write(tmp_path / "lm.txt", " the cat <unk>\n a dog\nno newline at end")
    for source in (TextSource(path), TextSource(path, format="text")):
        ds = _load(tmp_path, source, ("text",))
        assert ds["text"] == [" the cat <unk>", " a dog", "no newline at end"]
    assert count_lines(path) == 3


def test_order_preserved_for_many_rows(tmp_path):
    n = 5000
    path = _write(tmp_path / "big.tsv", "src\ttrg\n" + "".join(f"s{i}\tt{i}\n" for i in range(n)))
    ds = _load(tmp_path, TextSource(path), ("src", "trg"))
    assert ds["src"] == [f"s{i}" for i in range(n)]
    assert ds["trg"][-1] == f"t{n - 1}"


def test_header_only_file_gives_empty_dataset(tmp_path):
    path = _write(tmp_path / "empty.tsv", "src\ttrg\n")
    ds = _load(tmp_path, TextSource(path), ("src", "trg"))
    assert len(ds) == 0 and ds.column_names == ["src", "trg"]


def test_utf8_bom_is_not_part_of_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\nhi,1\n".encode("utf-8"))
    assert _rows(_load(tmp_path, TextSource(str(path)), ("text", "label"))) == [("hi", "1")]


# --- caching ---------------------------------------------------------------------------------


def test_changed_file_is_not_served_from_cache(tmp_path):
    path = tmp_path / "c.tsv"
    _write(path, "src\ttrg\nold\tone\n")
    assert _load(tmp_path, TextSource(str(path)), ("src", "trg"))["src"] == ["old"]
    _write(path, "src\ttrg\nnew\tone\n")  # same size: only the mtime tells them apart
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert _load(tmp_path, TextSource(str(path)), ("src", "trg"))["src"] == ["new"]
    _write(path, "src\ttrg\nnew\tone\nmore\ttwo\n")
    assert _load(tmp_path, TextSource(str(path)), ("src", "trg"))["src"] == ["new", "more"]


def test_dataset_is_memory_mapped_from_cache_dir(tmp_path):
    path = _write(tmp_path / "m.tsv", "src\ttrg\na\tb\n")
    ds = _load(tmp_path, TextSource(path), ("src", "trg"))
    assert ds.cache_files and ds.cache_files[0]["filename"].startswith(str(tmp_path / "cache"))


def test_progress_bar_setting_is_restored(tmp_path):
    path = _write(tmp_path / "p.tsv", "src\ttrg\na\tb\n")
    before = datasets.is_progress_bar_enabled()
    _load(tmp_path, TextSource(path), ("src", "trg"))
    assert datasets.is_progress_bar_enabled() == before


# --- errors ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.tsv")
    assert _error(tmp_path, TextSource(path), ("src", "trg")) == f"data file not found: {path}"


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A run's config keeps its data paths as written, relative to where it was trained."""
    monkeypatch.chdir(tmp_path)
    message = _error(tmp_path, TextSource("data/nope.tsv"), ("src", "trg"))
    assert message == ("data file not found: data/nope.tsv (relative to the current "
                       f"directory, {os.getcwd()})")


def test_missing_side_file_of_text_pair(tmp_path):
    _write(tmp_path / "train.de", "a\n")
    message = _error(tmp_path, TextSource(str(tmp_path / "train"), langs=("de", "en")), ("src", "trg"))
    assert message == f"data file not found: {tmp_path / 'train.en'}"


def test_invalid_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"src\ttrg\nok\tok\ncaf\xe9\tcafe\n")
    message = _error(tmp_path, TextSource(str(path)), ("src", "trg"))
    assert message == f"{path} line 3: not valid UTF-8 (byte 0xe9 at column 4)"


def test_invalid_utf8_in_csv_and_text(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(b'text,label\n"multi\nline",1\n\xff,0\n')
    assert f"{csv_path} line 4: not valid UTF-8" in _error(tmp_path, TextSource(str(csv_path)),
                                                            ("text", "label"))
    txt_path = tmp_path / "bad.txt"
    txt_path.write_bytes("é\n".encode() + b"x\x80\n")
    message = _error(tmp_path, TextSource(str(txt_path)), ("text",))
    assert message == f"{txt_path} line 2: not valid UTF-8 (byte 0x80 at column 2)"


def test_tsv_row_with_too_few_columns(tmp_path):
    path = _write(tmp_path / "short.tsv", "src\ttrg\na\tb\nc\td\nonly one\n")
    message = _error(tmp_path, TextSource(path), ("src", "trg"))
    assert message == f"{path} line 4: expected at least 2 tab-separated columns, found 1"


def test_headerless_tsv_row_too_short_for_index(tmp_path):
    path = _write(tmp_path / "h.tsv", "a\tb\tc\nd\te\n")
    message = _error(tmp_path, TextSource(path, header=False, fields=(0, 2)), ("src", "trg"))
    assert message == f"{path} line 2: expected at least 3 tab-separated columns, found 2"


def test_csv_row_with_too_few_columns_reports_its_first_line(tmp_path):
    path = _write(tmp_path / "short.csv", 'text,label\n"two\nlines",1\nlonely\n')
    message = _error(tmp_path, TextSource(path), ("text", "label"))
    assert message == f"{path} line 4: expected at least 2 comma-separated columns, found 1"


def test_header_without_named_field(tmp_path):
    path = _write(tmp_path / "sst.tsv", "sentence\tidx\nhi\t0\n")
    message = _error(tmp_path, TextSource(path, fields=("sentence", "label")), ("text", "label"))
    assert message == f"{path}: no column 'label' in header (columns: sentence, idx)"


def test_jsonl_line_that_is_not_json(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a"}\n{"text": oops}\n')
    message = _error(tmp_path, TextSource(path), ("text",))
    assert message.startswith(f"{path} line 2: not valid JSON")


def test_jsonl_line_without_key(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    message = _error(tmp_path, TextSource(path), ("text", "label"))
    assert message.startswith(f"{path} line 2: no key 'label'")


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = _write(tmp_path / "d.json", "[1, 2]\n")
    assert _error(tmp_path, TextSource(path), ("text",)).startswith(f"{path} line 1: expected a JSON object")


def test_text_pair_with_different_line_counts(tmp_path):
    de = _write(tmp_path / "train.de", "".join(f"{i}\n" for i in range(100)))
    en = _write(tmp_path / "train.en", "".join(f"{i}\n" for i in range(99)))
    message = _error(tmp_path, TextSource(str(tmp_path / "train"), langs=("de", "en")), ("src", "trg"))
    assert message == f"{de} has 100 lines but {en} has 99"


def test_bad_arguments_are_user_errors(tmp_path):
    path = _write(tmp_path / "a.tsv", "src\ttrg\na\tb\n")
    assert "format" in _error(tmp_path, TextSource(path, format="xls"), ("src", "trg"))
    assert "fields" in _error(tmp_path, TextSource(path, fields=("src",)), ("src", "trg"))
    assert "header is false" in _error(tmp_path, TextSource(path, header=False, fields=("a", "b")),
                                       ("x", "y"))
    assert "cannot infer" in _error(tmp_path, TextSource(str(tmp_path / "a.xyz")), ("text",))
    assert "langs" in _error(tmp_path, TextSource(path, format="text"), ("src", "trg"))
    with pytest.raises(UserError, match="allow_empty"):
        load_columns(TextSource(path), ("src", "trg"), allow_empty=("label",))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.tsv.gz"
    path.write_bytes(b"this is not gzip data\n")
    assert _error(tmp_path, TextSource(str(path)), ("a",)).startswith(f"{path}: not a valid gzip file")


# --- hub (datasets.load_dataset is replaced: tests never touch the network) -------------------


def test_hub_selects_and_renames_fields(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [1, 0], "idx": [0, 1]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = TextSource("validation", format="hub", hub_name="glue", hub_config="sst2",
                        fields=("sentence", "label"))
    ds = _load(tmp_path, source, ("text", "label"))
    assert calls == [("glue", "sst2", "validation")]
    assert _rows(ds) == [("a", "1"), ("b", "0")]


def test_hub_failure_names_the_dataset(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hugging Face Hub\nmore details")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    message = _error(tmp_path, TextSource("train", hub_name="someone/missing"), ("text",))
    assert "'someone/missing'" in message and "Couldn't reach" in message


def test_non_hub_sources_never_call_load_dataset(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("load_dataset called for a local file")

    monkeypatch.setattr(datasets, "load_dataset", forbidden)
    path = _write(tmp_path / "a.tsv", "src\ttrg\na\tb\n")
    assert len(_load(tmp_path, TextSource(path), ("src", "trg"))) == 1


# --- helpers ---------------------------------------------------------------------------------


def test_file_fingerprint_and_count_lines(tmp_path):
    path = _write(tmp_path / "f.txt", "a\nb\n")
    assert file_fingerprint(path) == hashlib.sha256(b"a\nb\n").hexdigest()
    assert count_lines(path) == 2
    with pytest.raises(UserError, match="data file not found"):
        file_fingerprint(str(tmp_path / "missing"))
