# Every target builds its own virtual environment in .venv from pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# The OPA engine for tests/test_opa_differential.py. The wheel declares Python 3.14 or newer,
# but it is a ctypes wrapper around a Go library that also runs on older Python versions,
# and it is built for Linux x86_64 only (glibc 2.34 or newer).
OPA_BINDINGS := opa-golib-python-bindings==0.4.4
OPA_SKIPPED := the OPA differential tests will be skipped; retry with make install-opa

.PHONY: demo test lint bench bench-proofs clean install-opa

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@$(MAKE) --no-print-directory install-opa
	touch $@

# Never fails: without the OPA engine only the differential tests are skipped, and pytest prints why.
install-opa:
	@scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT; \
	platform="$$(uname -s)-$$(uname -m)"; \
	if [ ! -x $(BIN)/pip ]; then \
		echo "warning: $(BIN)/pip not found, so $(OPA_BINDINGS) is not installed; run make test first" >&2; \
	elif [ "$$platform" != Linux-x86_64 ]; then \
		echo "warning: $(OPA_BINDINGS) has a wheel for Linux-x86_64 only, not $$platform; $(OPA_SKIPPED)" >&2; \
	elif ! $(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.14 \
			--platform manylinux_2_34_x86_64 '$(OPA_BINDINGS)' -d "$$scratch"; then \
		echo "warning: could not download $(OPA_BINDINGS) (no network?); $(OPA_SKIPPED)" >&2; \
	elif ! $(BIN)/pip install --quiet --no-deps --ignore-requires-python "$$scratch"/*.whl; then \
		echo "warning: could not install $(OPA_BINDINGS); $(OPA_SKIPPED)" >&2; \
	elif ! $(BIN)/python -c 'import opa_bindings; opa_bindings.OpaEngine().close()'; then \
		echo "warning: $(OPA_BINDINGS) is installed, but its library does not load (glibc older than 2.34?); $(OPA_SKIPPED)" >&2; \
	else \
		echo "installed $(OPA_BINDINGS) for the OPA differential tests"; \
	fi

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(VENV)/.installed
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Writes bench/RESULTS.md; BENCH_PROFILE=quick runs small sizes and prints the report only.
bench: $(VENV)/.installed
	$(BIN)/python -m bench.run

# Proof of possession costs, a few seconds; the figures go into bench/RESULTS.md.
bench-proofs: $(VENV)/.installed
	$(BIN)/python -m bench.proofs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
