"""`python -m bench`: the main job (see bench.main)."""

import sys

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
