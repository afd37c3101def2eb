# Two commands do all the set-up: `make demo` (train, evaluate and use a small translator)
# and `make test` (the test suite). Both create .venv and install the project into it first.
# `make lint` runs ruff and mypy (their settings are in pyproject.toml) from the same .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_RUN ?= runs/demo_es_en

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/seq2seq train configs/demo_es_en.yaml --run-dir $(DEMO_RUN) --overwrite
	$(BIN)/seq2seq evaluate $(DEMO_RUN) --split test --beam-size 5
	$(BIN)/seq2seq translate $(DEMO_RUN) --beam-size 5 \
		"¿Dónde está la estación de tren?" \
		"Me gusta leer libros por la noche." \
		"Mi hermano es más alto que yo." \
		"No sé qué hacer."

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check seq2seq bench tests cli.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
