# Entry points; each sets itself up on a fresh machine (a .venv with the package and its test extras).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# The oldest Ray of the supported range (the lower bound in pyproject.toml; tests/test_versions.py checks)
# and the tests that use Ray, run against it in a venv of their own.
RAY_OLDEST := 2.56.0
OLDEST_VENV := .venv-ray-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed
RAY_TESTS := -k "ray or serve or cluster or multinode or cli"
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE := disabled

.PHONY: demo test test-ray-oldest bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python examples/quickstart.py

test: $(STAMP)
	$(VENV)/bin/python -m pytest

# Serve of Ray 2.56 reads a protobuf field that protobuf 7 removed (newer Ray checks): docs/cluster.md.
$(OLDEST_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/pip install --quiet -e ".[test]" "ray[default,serve]==$(RAY_OLDEST)" "protobuf<7"
	touch $(OLDEST_STAMP)

test-ray-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -m pytest $(RAY_TESTS)

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/dispatch.py
