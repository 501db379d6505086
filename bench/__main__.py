"""`python -m bench`: the main job (see bench.main)."""

import sys

from bench import cli


def main(argv=None) -> int:
    from bench.main import main as job  # imported under cli.run: Ctrl-C while numpy loads is handled too

    return job(argv)


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench", main))
