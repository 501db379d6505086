"""Implementations from outside: a real distribution (a dist-info folder with entry_points.txt on sys.path).

The plugin's module is the README's example, so the example is what is checked. Everything
runs in fresh processes with the folder on PYTHONPATH: importlib.metadata finds the
distribution the way it finds an installed one, and this process's registry is untouched.
"""

import json
import os
import subprocess
import sys

import pytest

from .test_install import readme_snippet

DIST = "stepbench-plugin-demo"
ENTRY_POINTS = """\
[stepbench.implementations]
mine:matmul = my_steps:MatmulStep
mine:broken-import = my_broken_steps:Step
mine:not-a-step = json:dumps
numpy = my_steps:MatmulStep
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder holding the README's my_steps.py, a module that fails to import, and their dist-info."""
    root = tmp_path_factory.mktemp("site")
    (root / "my_steps.py").write_text(readme_snippet("## An example", "docs/plugins.md") + "\n")
    (root / "my_broken_steps.py").write_text('raise ImportError("the demo kernel library is not installed")\n')
    info = root / f"{DIST.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


def _run(site, args, **kwargs):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, done.stderr
    return done


LISTING = """
import json, impls
from impls import agreement
names = impls.names()
reasons = impls.available()
p = agreement.check_problem("seed", "float32", "adam")
report = agreement.check(impls.create("mine:matmul", p))
try:
    impls.create(names[-1], p)
    clash = "created"
except RuntimeError as error:
    clash = str(error)
print(json.dumps({"names": names, "reasons": reasons, "agrees": report.ok, "builtin": type(impls.create("numpy", p)).__name__, "clash": clash}))
"""


def test_plugins_are_listed_after_the_builtins_and_broken_ones_say_why(site):
    out = json.loads(_run(site, ["-c", LISTING]).stdout)
    names, reasons = out["names"], out["reasons"]
    builtins = names[: names.index("mine:matmul")]
    assert builtins[0] == "numpy" and "jax:cpu" in builtins and not any(n.startswith("mine:") for n in builtins)
    assert names[len(builtins) :] == ["mine:matmul", "mine:broken-import", "mine:not-a-step", f"numpy@{DIST}"]
    assert reasons["mine:matmul"] is None and out["agrees"]
    assert "failed to load: ImportError: the demo kernel library is not installed" in reasons["mine:broken-import"]
    assert "not an impls.Step subclass" in reasons["mine:not-a-step"]
    assert "the name 'numpy' is taken by a built-in implementation" in reasons[f"numpy@{DIST}"]
    # Listed under its new name, it is not usable under it either: the error names the clash.
    assert out["clash"].startswith(f"numpy@{DIST} cannot run here: plugin numpy = ")
    assert out["clash"].endswith("the name 'numpy' is taken by a built-in implementation")
    # The built-ins are as they were: numpy is still the reference and usable.
    assert reasons["numpy"] is None and out["builtin"] == "NumpyStep"


def test_a_plugin_is_checked_and_timed_by_make_bench_and_a_broken_one_skipped(site, tmp_path):
    out = tmp_path / "out"
    chosen = ["numpy", "mine:matmul", "mine:broken-import", "mine:not-a-step", f"numpy@{DIST}"]
    args = ["-m", "bench", "--implementations", *chosen, "--presets", "seed", "--dtypes", "float32"]
    args += ["--optimizers", "sgd", "adam", "--no-sweep", "--rounds", "2", "--max-time", "0"]  # two rounds, no more
    _run(site, [*args, "--out", str(out)])
    results = json.loads((out / "results.json").read_text())["results"]
    by_name = {}
    for r in results:
        by_name.setdefault(r["implementation"], []).append(r)
    for r in by_name["mine:matmul"]:
        assert r["status"] == "ok" and r["agreement_worst_ratio"] <= 1 and r["median_s"] > 0
    for name in chosen[2:]:
        assert all(r["status"] == "skipped" and "unavailable" in r["reason"] for r in by_name[name]), name
    report = (out / "report.md").read_text()
    assert "`mine:matmul`" in report and "failed to load" in report
