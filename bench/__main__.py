"""`python -m bench`: the main job (bench.job); `python -m bench compare ...`: the regression gate (bench.gate);
`python -m bench triage`: the asv history's alerts re-measured and bisected (bench.triage)."""

import sys

from bench.harness import cli


def main(argv=None) -> int:
    from bench.job.main import main as job  # imported under cli.run: Ctrl-C while numpy loads is handled too

    return job(argv)


def compare(argv=None) -> int:
    from bench.gate.compare import main as gate

    return gate(argv)


def triage(argv=None) -> int:
    from bench.triage.main import main as triage_main

    return triage_main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        sys.exit(cli.run("python -m bench compare", compare, sys.argv[2:]))
    if sys.argv[1:2] == ["triage"]:
        sys.exit(cli.run("python -m bench triage", triage, sys.argv[2:]))
    sys.exit(cli.run("python -m bench", main))
