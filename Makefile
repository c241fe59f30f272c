# Developer and CI entry points. `make test` is what CI runs (.ci/run).
#   make setup   create $(VENV) and install the project with its dev extras
#   make test    run the test suite on every core (PYTEST_ARGS="tests/test_cli.py -x" to narrow it,
#                PYTEST_WORKERS= to run it in one process)
#   make demo    render the synthetic demo (outputs/demo)
#   make bench   run every benchmarks/*.py; each prints one JSON line (live.py and render.py
#                need a trained avatar: make bench AVATAR_BENCH_RUN=runs/me)
#   make clean   remove caches and build outputs (keeps the venv and outputs/)

VENV ?= .venv
PYTHON ?= python3
PYTEST_ARGS ?=
# pytest-xdist: one worker per core (at most 4), each with one thread (tests/conftest.py).
PYTEST_WORKERS ?= -n auto --maxprocesses=4

PY := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml or constraints.txt
# means the install is stale. An existing venv without it gets the install once.
STAMP := $(VENV)/.avatar-installed

.PHONY: setup test demo bench clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	touch $@

test: setup
	$(PY) -m pytest -q $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The ICT head model ships beside the project in ../shared on the team's machines; elsewhere
# `python data_tools/fetch_ict.py` gets it, and without it the demo renders a procedural head.
ICT_SHARED := $(wildcard ../shared/assets/ict-facekit)

demo: setup
	$(if $(ICT_SHARED),AVATAR_ASSETS=$${AVATAR_ASSETS:-$(abspath $(ICT_SHARED))}) $(VENV)/bin/avatar demo

bench: setup
	@set -e; for script in $(wildcard benchmarks/*.py); do \
		echo "== $$script"; \
		$(PY) $$script; \
	done

clean:
	rm -rf build dist .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
