# `make serve` and `make test` set themselves up on a fresh machine from the committed lock (requirements.lock:
# every package pinned by version and hash, CPU torch included); a second run skips the install.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
# torch's CPU build (torch==2.13.0+cpu) is on PyTorch's CPU index; where pip's config names a local copy, that
# serves too (the hash in the lock decides). It is installed first, alone, so only its lookup asks that index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
CHROMIUM := /usr/bin/chromium
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install serve serve-embedded test lock bench-router bench-serve screenshots clean

# A new lock (or pyproject.toml) means a new environment: nothing left over from the last one.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
		{ echo "$(LOCK) is resolved for CPython 3.11 (torch's cp311 CPU wheel): run with PYTHON=python3.11" >&2; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	awk '/^torch==/{p=1} p&&!/^ /&&!/^torch==/{exit} p' $(LOCK) > $(VENV)/torch.txt
	$(BIN)/python -m pip install -q --require-hashes --no-deps --retries 1 --extra-index-url $(TORCH_INDEX) \
		-r $(VENV)/torch.txt
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@touch $@

install: $(STAMP)

# Sync the lock with pyproject.toml, keeping the pins it can; `make lock LOCK_FLAGS=--upgrade` (or
# `--upgrade-package NAME`) moves to newer releases: a deliberate commit, after `make test` passed on it
lock:
	@test -x .lockenv/bin/pip-compile || { $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q pip-tools==7.7.0; }
	.lockenv/bin/pip-compile -q $(LOCK_FLAGS) --extra dev --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --constraint=lock-constraints.txt --output-file=$(LOCK) pyproject.toml

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
	rm -rf $(VENV) .lockenv .pytest_cache .ruff_cache
