# Two commands for everyone: `make run` (the SERVAL experiment) and `make test`.
# Every target sets up .venv itself on first use: torch (CPU wheel, the pin in pyproject.toml) first,
# then the kit with its extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0

.PHONY: run test lint chromium course book lab build doctor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$$(grep -o '"torch==[0-9.]*' pyproject.toml | tr -d '"')"
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	touch $(STAMP)

run: $(STAMP)  ## the SERVAL loop on the five SERVAL tables and the neoplasm text task (resumes)
	$(BIN)/labkit serval

test: lint chromium  ## lint and types of labkit/, then every test: package, datasets, notebooks, grading, browser
	$(BIN)/python -m pytest

lint: $(STAMP)  ## ruff (style, imports, function size) and mypy on labkit/; fails on any finding
	$(BIN)/ruff check labkit
	$(BIN)/mypy labkit

# The browser tests (tests/browser.py) drive Debian's Chromium: Playwright's own browser download is
# not reachable from CI. When `chromium` is missing, apt installs it (root only), refreshing the
# package lists only if the install fails without them (a bare image has none).
chromium:
	@command -v chromium >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make: the browser tests need Chromium on PATH as" \
	    "\`chromium\`; there is no apt-get here to install it: use this system's package manager" >&2; exit 1; }; \
	  [ "$$(id -u)" = 0 ] || { echo "make: the browser tests need Debian's chromium;" \
	    "install it as root: sudo apt-get install -y chromium (or run make test as root)" >&2; exit 1; }; \
	  echo "apt-get install chromium (the browser tests drive it)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends chromium \
	    || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }; }

course: $(STAMP)  ## run every notebook headless in fast mode into runs/ and print a table
	$(BIN)/labkit course run

book: $(STAMP)  ## the solved lessons in full mode, executed into runs/book/solutions/ with HTML pages (resumes; hours on 2 cores)
	$(BIN)/labkit course run --solutions --full --html --resume --timeout 7200 --out runs/book

lab: $(STAMP)  ## open JupyterLab on the notebooks
	$(BIN)/jupyter lab notebooks/

build: $(STAMP)  ## regenerate the student notebooks/ from solutions/
	$(BIN)/labkit course build

doctor: $(STAMP)
	$(BIN)/labkit doctor

clean:
	rm -rf runs .pytest_cache
