"""Timing: the asv suite, the pytest-benchmark suite and `make bench` (python -m bench), over one grid."""

import importlib.util
import pathlib
import sys

# asv imports this suite from the checkout. Every environment asv builds has the package
# installed, and so has the Makefile's venv (editable); `asv run --python=same` installs
# nothing, and where the current environment lacks the package the checkout's is used.
if importlib.util.find_spec("impls") is None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
