"""`python -m bench`: the main job (bench.job); `python -m bench compare ...`: the regression gate (bench.gate)."""

import sys

from bench.harness import cli


def main(argv=None) -> int:
    from bench.job.main import main as job  # imported under cli.run: Ctrl-C while numpy loads is handled too

    return job(argv)


def compare(argv=None) -> int:
    from bench.gate.compare import main as gate

    return gate(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        sys.exit(cli.run("python -m bench compare", compare, sys.argv[2:]))
    sys.exit(cli.run("python -m bench", main))
