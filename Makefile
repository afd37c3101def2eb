# Two commands do all the set-up: `make demo` (train, evaluate and use a small translator)
# and `make test` (the test suite). Both create .venv and install the project into it first.
# `make lint` runs ruff and mypy (their settings are in pyproject.toml) from the same .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_RUN ?= runs/demo_es_en

.PHONY: demo test lint install browser clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,serve,onnx]"
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

# The browser test of `seq2seq serve` drives Debian's chromium. Installed here when missing and
# apt-get can install it (as root); elsewhere that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
				|| echo "note: apt-get could not install chromium: the browser test will be skipped"; \
		else echo "note: chromium is missing (install it to run the browser test)"; fi; }

test: install browser
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check seq2seq bench tests cli.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs
