"""`python -m bench.asvtools.smoke LOG -- asv run ...`: asv's smoke run of `make test`, reported in a few lines.

asv prints every parameter set it skips (each CUDA entry on a machine without a GPU, with its
reason) and a table per benchmark: thousands of lines where nothing failed. The whole output
goes to LOG; the console gets one line per benchmark with asv's own status, the output of
every parameter set that failed (its traceback), and a summary. The exit status is asv's.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys

from bench.harness import cli

# `[ 62.50%] ··· training_step.Presets.time_step      ok` (or `11/150 failed`): a benchmark's status line.
STATUS = re.compile(r"^\[\s*[\d.]+%\] ··· (?!Setting up)(\S+)\s+(ok|failed|\d+/\d+ failed)\s*$")
# `[ 62.50%] ···· For parameters: 'torch:cuda', 'seed', ...`: the output of one parameter set follows.
PARAMETERS = re.compile(r"^\[\s*[\d.]+%\] ···· (For parameters: .*)$")
PROGRESS = re.compile(r"^\[\s*[\d.]+%\] ")
SKIPPED = "asv: skipped:"
FAILED = ("Traceback (most recent call last):", "asv: benchmark failed")


@dataclasses.dataclass
class Summary:
    statuses: list[tuple[str, str]]  # (benchmark, asv's status)
    failures: list[list[str]]  # the output of each parameter set that failed
    skipped: int  # parameter sets skipped (with their reason, in the log)


def summarize(lines: list[str]) -> Summary:
    """asv prints each benchmark's status line, its table, then (with --show-stderr) one section of the
    output of its parameter sets, each starting with `For parameters: ...`."""
    statuses, blocks, in_output = [], [], False
    for line in lines:
        if match := STATUS.match(line):
            statuses.append(match.groups())
        if match := PARAMETERS.match(line):
            in_output = True
            blocks.append([match.group(1)])
        elif PROGRESS.match(line) or not line.startswith(" "):
            in_output = False
        elif in_output and line.strip().startswith("For parameters:"):
            blocks.append([line.strip()])
        elif in_output and line.strip():
            blocks[-1].append(line.strip())
    skipped = [b for b in blocks if any(text.startswith(SKIPPED) for text in b)]
    # Output of a set that ran (a library's chatter) stays in the log; a traceback is a failure.
    failures = [b for b in blocks if b not in skipped and any(text.startswith(FAILED) for text in b)]
    return Summary(statuses, failures, len(skipped))


def report(summary: Summary, status: int, log: pathlib.Path) -> list[str]:
    lines = [f"asv: {name}: {state}" for name, state in summary.statuses]
    for block in summary.failures:
        lines += ["", f"asv: failed: {block[0]}", *(f"    {text}" for text in block[1:])]
    failed = sum(state != "ok" for _, state in summary.statuses)
    lines.append(
        f"asv smoke run: {len(summary.statuses)} benchmarks, {failed} with failures, "
        f"{summary.skipped} parameter sets skipped here (reasons in {log}); asv exit status {status}"
    )
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") != 1 or len(argv) < 3:
        raise cli.Fatal("usage: python -m bench.asvtools.smoke LOG -- COMMAND ...")
    log, command = pathlib.Path(argv[0]), argv[2:]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    summary = summarize(log.read_text(errors="replace").splitlines())
    print("\n".join(report(summary, status, log)))
    if status == 0 and not summary.statuses:
        print(f"asv ran no benchmark: see {log}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.asvtools.smoke", main))
