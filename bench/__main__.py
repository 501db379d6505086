"""`python -m bench`: the main job (see bench.main); `python -m bench compare ...`: the regression gate (bench.compare)."""

import sys

from bench import cli


def main(argv=None) -> int:
    from bench.main import main as job  # imported under cli.run: Ctrl-C while numpy loads is handled too

    return job(argv)


def compare(argv=None) -> int:
    from bench.compare import main as gate

    return gate(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        sys.exit(cli.run("python -m bench compare", compare, sys.argv[2:]))
    sys.exit(cli.run("python -m bench", main))
