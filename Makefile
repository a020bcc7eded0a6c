# Two commands for everyone: `make run` (the SERVAL experiment) and `make test`.
# Every target sets up .venv itself on first use: torch (CPU wheel, the pin in pyproject.toml) first,
# then the kit with its extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: run test lint course lab build doctor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$$(grep -o '"torch==[0-9.]*' pyproject.toml | tr -d '"')"
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	touch $(STAMP)

run: $(STAMP)  ## the SERVAL loop on the five SERVAL tables and the neoplasm text task (resumes)
	$(BIN)/labkit serval

test: lint  ## lint and types of labkit/, then every test: package, datasets, notebooks, grading
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff (style, imports, function size) and mypy on labkit/; fails on any finding
	$(BIN)/ruff check labkit
	$(BIN)/mypy labkit

course: $(STAMP)  ## run every notebook headless in fast mode into runs/ and print a table
	$(BIN)/labkit course run

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

build: $(STAMP)  ## regenerate the student notebooks/ from solutions/
	$(BIN)/labkit course build

doctor: $(STAMP)
	$(BIN)/labkit doctor

clean:
	rm -rf runs .pytest_cache
