"""What the command-line entry points share: a bad setting or Ctrl-C ends in one line, not a traceback.

A problem the user can fix (an argument, an environment variable, an output folder) is
found before any work is done and reported as `prog: error: ...`, exit status 2, as
argparse does; Ctrl-C reports `prog: interrupted`, exit status 130 as a shell gives it. The
jobs write their outputs under temporary names and swap them in at the end, so what an
earlier run wrote is left as it was either way.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys

from impls import threads

USAGE_ERROR = 2
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process that Ctrl-C ended


class Fatal(Exception):
    """A problem the user can fix; its message, naming the setting and the value, is all they need to see."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line: the usage block would bury the problem."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (--help lists the options)\n")


def run(prog: str, main, argv=None) -> int:
    """main(argv)'s exit status; Fatal and Ctrl-C end in one line on stderr instead of a traceback.

    An entry point that imports its job inside `main` has Ctrl-C while numpy or torch load handled too.
    """
    try:
        return main(argv) or 0
    except Fatal as problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        # On a line of its own: the terminal's ^C, or a progress line the signal cut short, ends without one.
        print(f"\n{prog}: interrupted; earlier results are left as they were", file=sys.stderr)
        return INTERRUPTED


def non_negative_seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more; got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more; got {text!r}")
    return value


def check_thread_budget() -> None:
    """Fatal for a STEPBENCH_THREADS that is not a positive integer, before any step would read it."""
    try:
        threads.budget()
    except ValueError as problem:
        raise Fatal(str(problem)) from None


def check_out_dir(out: pathlib.Path, option: str = "--out") -> None:
    """Fatal unless `out` is, or can be created as, a folder this process may write to."""
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = "is" if existing == out else f"cannot be created: {existing} is"
        raise Fatal(f"{option} {out} {what} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise Fatal(f"{option} {out}: {existing} is not writable")
