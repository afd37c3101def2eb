"""The documents that are generated from the code are up to date and complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seq2seq.config import Config
from seq2seq.config_reference import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_reference_is_generated_from_the_config():
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == config_reference(), \
        "docs/configuration.md is stale: python -m seq2seq.config_reference > docs/configuration.md"


def test_every_config_key_is_documented():
    page = config_reference()

    def keys(cls, prefix):
        for field in dataclasses.fields(cls):
            value = getattr(cls(), field.name)
            if dataclasses.is_dataclass(value):
                yield from keys(type(value), f"{prefix}{field.name}.")
            else:
                yield f"{prefix}{field.name}"

    for key in keys(Config, ""):
        if "." not in key:
            continue  # task and name are described in the introduction
        row = next((line for line in page.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, key
        cells = row[2:-2].split(" | ")  # key, type, default, meaning ("\\|" inside a cell)
        assert len(cells) == 4 and cells[3].strip(), f"{key} has no description in config.py"
