"""`python -m bench compare`: the regression gate.

cells.py    which cells of the grid are compared (pytest's -k over the pytest-benchmark ids)
sides.py    BASE and HEAD: a revision's clean export or the working tree, and the interpreter
workers.py  one side's process (worker.py) and its JSON-lines protocol
rounds.py   the measurement: rounds of processes, paired blocks, interleaved or as a duet
paired.py   the statistics: HEAD/BASE, its two-level bootstrap interval, the verdict
output.py   the verdict per cell, the console table and the JSON record
compare.py  the command line
"""

from bench.harness import cli


class Refused(cli.Fatal):
    """Bad arguments or an environment that cannot run the suite: one line, exit status 2."""
