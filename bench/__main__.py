"""`python -m bench`: the main job (see bench.main); `python -m bench compare ...`: the regression gate (bench.compare)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["compare"]:
        from bench.compare import main as compare

        sys.exit(compare(sys.argv[2:]))
    from bench.main import main

    sys.exit(main())
