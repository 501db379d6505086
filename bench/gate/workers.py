"""One side's worker process (bench/gate/worker.py), spoken to in JSON lines."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import tempfile

from bench.gate import Refused
from bench.gate.sides import Side
from impls import threads

WORKER = pathlib.Path(__file__).resolve().parent / "worker.py"
# Thread pools that sleep as soon as their work is done. By default OpenBLAS's threads spin
# for about 2^28 cycles (0.1 s) after each call and OpenMP's for a while too: in an
# interleaved pair the side that has just finished would still be burning a core while the
# other side's block runs. Both sides run with the same settings. (The main job, which times many
# implementations in one process, bounds the spinning instead: bench.job.measure.SHORT_WAITS.)
PASSIVE_WAITS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}


class WorkerProcess:
    """One side's process; requests and replies are JSON lines (bench/gate/worker.py)."""

    def __init__(self, side: Side, seed: int, budget: int, cpus=None, passive: bool = True, waits=None):
        self.side = side
        waits = (PASSIVE_WAITS if passive else {}) if waits is None else waits
        env = {**os.environ, threads.ENV: str(budget), **waits}
        command = [side.python, str(WORKER), "--checkout", str(side.checkout), "--seed", str(seed)]
        if cpus is not None:
            command += ["--cpus", ",".join(map(str, cpus))]
        # A file, not a pipe: a worker that prints much (numba's warnings) must never block on a full pipe.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )
        hello = self.read()
        if "error" in hello:
            raise Refused(f"{side.role} ({side.label}, {side.python}): {hello['error']}")

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            self.stderr.seek(0)
            tail = self.stderr.read().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(
                f"{self.side.role} worker ({self.side.python}) exited with status {self.process.returncode}: {tail[0]}"
            )
        return json.loads(line)

    def send(self, **request) -> None:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def ask(self, **request) -> dict:
        self.send(**request)
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send(op="quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            with contextlib.suppress(OSError):
                stream.close()
