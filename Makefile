# `make demo` and `make test` each build their own virtualenv from setup.py.
# CI runs `make test` with Python 3.11 in .venv. Another interpreter gets its own virtualenv
# (.venv-python3.12, ...): `make test PYTHON=python3.12`, or `make test-py312` / `make test-py313`,
# which find python3.X on PATH or in pyenv and say so when it is not there.
PYTHON ?= python3.11
VENV ?= $(if $(filter python3.11,$(notdir $(PYTHON))),.venv,.venv-$(notdir $(PYTHON)))
PY := $(VENV)/bin/python

.PHONY: demo test lint bench clean test-py311 test-py312 test-py313 test-pythons

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dask]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m beam_jobs.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# Two workers: most tests wait on subprocesses, decoders and storage, so two share 2 cores well.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

bench: $(VENV)/.installed
	$(PY) -m bench.compare

# python3.X itself when it runs, else the newest pyenv 3.X.* (pyenv's shim runs only the global version).
find_python = $(shell if python$(1) -c '' >/dev/null 2>&1; then command -v python$(1); \
	elif command -v pyenv >/dev/null 2>&1; then \
	  ls -d "$$(pyenv root)"/versions/$(1).*/bin/python$(1) 2>/dev/null | sort -V | tail -n 1; fi)

test-py311 test-py312 test-py313: test-py3%:
	@interpreter="$(call find_python,3.$*)"; \
	if [ -z "$$interpreter" ]; then \
	  echo "python3.$* not found (on PATH or in pyenv): install it, or run make test PYTHON=/path/to/python3.$*"; \
	  exit 2; \
	fi; \
	$(MAKE) --no-print-directory test PYTHON="$$interpreter"

# Every supported interpreter that is here; names the ones that are not.
test-pythons:
	@for minor in 11 12 13; do \
	  if [ -n "$$($(MAKE) --no-print-directory -s print-python-3.$$minor)" ]; then \
	    $(MAKE) --no-print-directory test-py3$$minor || exit 1; \
	  else echo "python3.$$minor: not here, skipped"; fi; \
	done

print-python-%:
	@echo "$(call find_python,$*)"

clean:
	rm -rf $(VENV) .venv-python3.* demo_out
