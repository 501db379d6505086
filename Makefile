# The two commands of the README: `make test` and `make bench`. Both create .venv first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: test bench dynamics venv clean tox drift lint

venv: $(STAMP)

# The stamp is written last, so an interrupted install is redone on the next run.
$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	cp requirements.txt $@

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) -m bench.quick

# The training-dynamics study: writes results/latest/dynamics.md and dynamics.png.
dynamics: $(STAMP)
	$(PY) -m bench.dynamics_report

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
	rm -rf $(VENV) .pytest_cache
