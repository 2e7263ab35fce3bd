# `make serve` and `make test` set themselves up on a fresh machine; a second run skips the install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
CHROMIUM := /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: serve serve-embedded test bench-router bench-serve screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The dashboard's browser tests drive Debian's chromium through Playwright; installed only when missing.
$(CHROMIUM):
	@echo "$(CHROMIUM) is missing: installing chromium with apt-get for the dashboard's browser tests"
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y chromium
	@test -x $(CHROMIUM) || { echo "apt-get finished but $(CHROMIUM) is still missing" >&2; exit 1; }

# the Ray Serve app of ray_app.py on a local Ray instance (no `ray start --head` needed); prints the URL
serve: $(STAMP)
	$(BIN)/archrouter init-models
	$(BIN)/archrouter serve

# the same router and engines in one process, without Ray
serve-embedded: $(STAMP)
	$(BIN)/archrouter init-models
	$(BIN)/archrouter serve --embedded

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench-router: $(STAMP)
	$(BIN)/python benchmarks/router_decision.py

screenshots: $(STAMP) $(CHROMIUM)
	$(BIN)/python scripts/dashboard_screenshots.py

bench-serve: $(STAMP)
	$(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
