# The two commands of the README: `make bench` (the main job) and `make test`. Both create .venv first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
ASV := $(VENV)/bin/asv
# Written once the pins and the package are installed; its name changes with what it stands for, so older venvs are redone.
STAMP := $(VENV)/.installed-requirements-and-package

# Regression gate (pytest-benchmark): which configurations, and how much slower a median may get.
BENCH_SELECT ?= seed or tutorial or medium
COMPARE_FAIL ?= median:25%
PYTEST_BENCH := $(PY) -m pytest bench/pytest_suite -q -k "$(BENCH_SELECT)" --benchmark-min-rounds=5 --benchmark-max-time=0.5

# Where this machine's results are filed: hostname, CPU, cores, GPU (bench/harness/machine.py). Asked only
# when a recipe needs it, after the venv exists.
MACHINE = $(shell $(PY) -m bench.harness.machine)
# asv's own scratch: the smoke run writes its machine.json and results here, never under results/.
ASV_SCRATCH := .asv/smoke.conf.json

# The regression gate: BASE (and HEAD, default the working tree) are git revisions.
BASE ?= main
HEAD ?=
COMPARE_ARGS ?=

.PHONY: test bench venv clean bench-smoke bench-save bench-compare compare triage asv-machine asv-run asv-publish dashboard dashboard-screenshot dynamics small-gemm tox drift lint

venv: $(STAMP)

# The stamp is written last, so an interrupted install is redone on the next run. The package is
# installed editable, without dependencies (the pins are the dependencies), so `import impls`
# works from any directory and always imports this checkout's code.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	cp requirements.txt $@

# The tests run on every core, up to 8 (pytest-xdist: each worker imports torch, jax and numba); one test
# group (an agreement problem, whose oracle each worker would otherwise run again) stays on one worker.
# TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --maxprocesses 8 --dist loadgroup
	$(MAKE) --no-print-directory bench-smoke VENV=$(VENV)

bench: $(STAMP)
	$(PY) -m bench

# Both harnesses on the smallest problems, each timed body run once, so they cannot rot: every implementation
# in every benchmark of each, the presets at seed in float32 with SGD and the batch sweep at N=64 in float64
# (each dtype once; each dtype's and optimizer's agreement is the tests' own). asv runs
# with a copy of asv.conf.json whose results go to .asv/ (ignored): a test run leaves the checkout clean.
# STEPBENCH_SMOKE=1: the ratio tracks take one pair of blocks, without pauses (3.5 s each otherwise).
# asv's output (a line per parameter set skipped here) goes to .asv/smoke-run.log; the console gets
# each benchmark's status, what failed, and a summary (bench/asvtools/smoke.py).
bench-smoke: $(STAMP) asv-machine
	$(PY) -m pytest bench/pytest_suite -q --benchmark-disable -k "seed and float32 and sgd or n00064 and float64"
	$(PY) -m bench.asvtools.scratch asv.conf.json $(ASV_SCRATCH)
	$(ASV) check --python=same --config $(ASV_SCRATCH)
	STEPBENCH_SMOKE=1 $(PY) -m bench.asvtools.smoke .asv/smoke-run.log -- $(ASV) run --python=same --quick --dry-run --show-stderr --machine $(MACHINE) --config $(ASV_SCRATCH) -b "'seed', 'float32', 'sgd'" -b "'n00064', 'float64'"

# HEAD against BASE, both measured now, paired: exit 1 when a cell is confidently slower, 3 when one stays unsure.
compare: $(STAMP)
	$(PY) -m bench compare $(BASE) $(HEAD) $(COMPARE_ARGS)

# The alerts of the asv history (asv's Regressions page) re-measured paired here, the confirmed ones bisected;
# the record goes to results/triage/<machine>.json and onto the dashboard's Triage page.
TRIAGE_ARGS ?=
triage: $(STAMP)
	$(PY) -m bench triage $(TRIAGE_ARGS)

# pytest-benchmark: save a baseline under results/pytest-benchmark, then gate on it.
bench-save: $(STAMP)
	$(PYTEST_BENCH) --benchmark-autosave

bench-compare: $(STAMP)
	$(PYTEST_BENCH) --benchmark-compare --benchmark-compare-fail=$(COMPARE_FAIL)

# asv in the current environment: machine info without questions, the full grid, the dashboard.
asv-machine: $(STAMP)
	$(PY) -m bench.harness.machine register > /dev/null

asv-run: $(STAMP) asv-machine
	$(ASV) run --python=same --set-commit-hash HEAD --machine $(MACHINE)
	$(PY) -m bench.asvtools.results results/asv
	$(PY) -m bench.harness.environment --save results/asv-environment

asv-publish: dashboard

# asv's dashboard of every machine's results/asv/<machine>/, in results/html, working with no
# network (bench/asvtools/dashboard.py); `make dashboard-screenshot` renders it as the README shows it.
dashboard: $(STAMP)
	$(PY) -m bench.asvtools.results results/asv
	$(PY) -m bench.asvtools.dashboard

DASHBOARD_PAGE ?= training_step.Presets.time_step?p-implementation=%27numpy%27&p-preset=%27seed%27&p-dtype=%27float32%27
dashboard-screenshot: dashboard
	$(PY) -m bench.asvtools.browser --html-dir results/html --out docs/dashboard.png --page "$(DASHBOARD_PAGE)"

# The training-dynamics study: writes results/latest/dynamics.md and dynamics.png.
dynamics: $(STAMP)
	$(PY) -m bench.studies.dynamics

# The small-GEMM study: numba:blas's products against the GEMM rate, and oneMKL's and BLIS's kernels against
# OpenBLAS on them (BLIS from requirements-small-gemm.txt); writes results/latest/small-gemm.md and .json.
small-gemm: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-small-gemm.txt
	$(PY) -m bench.studies.small_gemm

# tox needs python3.10 ... python3.13 on PATH; where pyenv manages them, expose every installed one.
PYENV_BINS := $(shell command -v pyenv >/dev/null 2>&1 && for v in $$(pyenv versions --bare | grep -E '^3\.1[0-3]\.[0-9]+$$'); do printf '%s:' "$$(pyenv prefix $$v)/bin"; done)
WITH_PYTHONS := $(if $(PYENV_BINS),PATH="$(PYENV_BINS)$$PATH")

# The version matrix (tox.ini); pass arguments as TOX_ARGS="-e py311".
tox: $(STAMP)
	$(WITH_PYTHONS) $(PY) -m tox $(TOX_ARGS)

# Agreement of every implementation in every env of the matrix, as one table.
drift: $(STAMP)
	$(WITH_PYTHONS) $(PY) -m impls.drift --tox $(DRIFT_ENVS)

lint: $(STAMP)
	$(WITH_PYTHONS) $(PY) -m tox -e lint

clean:
	rm -rf $(VENV) .pytest_cache .asv results/html
