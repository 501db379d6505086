# The two commands of the README: `make test` and `make bench`. Both create .venv first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-requirements

.PHONY: test bench dynamics venv clean

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

clean:
	rm -rf $(VENV) .pytest_cache
