"""asv's benchmark suite (asv.conf.json's benchmark_dir): benchmark modules only.

asv imports this folder as a top-level package named `benchmarks` and walks every module in
it, so nothing but benchmarks lives here; the setup they share with the other harnesses is
bench.harness. The checkout's root is appended to sys.path so that `bench.harness` can be
imported; appended, not prepended: in an environment asv built, the installed `impls` (the
revision under measurement) must win over the checkout's. Where no `impls` is installed
(`asv run --python=same` in an environment without the package) the checkout's is used.
"""

import pathlib
import sys

_CHECKOUT = str(pathlib.Path(__file__).resolve().parents[2])
if _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
