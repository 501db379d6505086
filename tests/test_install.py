"""The package is installed in the environment the tests run in, so `import impls` works from any directory."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def readme_snippet(heading: str, page: str = "README.md") -> str:
    """The first indented code block under `heading` in `page` (README.md or a docs page), dedented."""
    text = (REPO / page).read_text()
    section = text.split(f"\n{heading}", 1)[1]
    block = re.search(r"\n\n((?:    .*\n|\n)+)", section).group(1)
    return "\n".join(line[4:] for line in block.rstrip().splitlines())


def test_readme_usage_snippet_runs_outside_the_checkout(tmp_path):
    # From another directory the checkout is not on sys.path: only an installed package imports.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = readme_snippet("## Using the package")
    assert "import impls" in code and "agreement.check" in code
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "numpy agrees with" in done.stdout
