# The two commands of the README: `make bench` (the main job) and `make test`. Both create .venv first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
ASV := $(VENV)/bin/asv
STAMP := $(VENV)/.installed-requirements

# Regression gate (pytest-benchmark): which configurations, and how much slower a median may get.
BENCH_SELECT ?= seed or tutorial or medium
COMPARE_FAIL ?= median:25%
PYTEST_BENCH := $(PY) -m pytest bench -q -k "$(BENCH_SELECT)" --benchmark-min-rounds=5 --benchmark-max-time=0.5

.PHONY: test bench venv clean bench-smoke bench-save bench-compare asv-machine asv-run asv-publish

venv: $(STAMP)

# The stamp is written last, so an interrupted install is redone on the next run.
$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	cp requirements.txt $@

test: $(STAMP)
	$(PY) -m pytest tests
	$(MAKE) --no-print-directory bench-smoke VENV=$(VENV)

bench: $(STAMP)
	$(PY) -m bench

# Both harnesses on the smallest problems, each timed body run once, so they cannot rot.
bench-smoke: $(STAMP) asv-machine
	$(PY) -m pytest bench -q --benchmark-disable -k "seed or n00064"
	$(ASV) check --python=same
	$(ASV) run --python=same --quick --dry-run --show-stderr -b "'seed'" -b "'n00064'"

# pytest-benchmark: save a baseline under results/pytest-benchmark, then gate on it.
bench-save: $(STAMP)
	$(PYTEST_BENCH) --benchmark-autosave

bench-compare: $(STAMP)
	$(PYTEST_BENCH) --benchmark-compare --benchmark-compare-fail=$(COMPARE_FAIL)

# asv in the current environment: machine info without questions, the full grid, the dashboard.
asv-machine: $(STAMP)
	$(ASV) machine --yes > /dev/null

asv-run: $(STAMP) asv-machine
	$(ASV) run --python=same --set-commit-hash HEAD

asv-publish: $(STAMP)
	$(ASV) publish

clean:
	rm -rf $(VENV) .pytest_cache .asv results/html
