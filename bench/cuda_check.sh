#!/usr/bin/env bash
# On a CUDA machine: list what can run, check the CUDA entries agree, then time every
# available entry with pytest-benchmark and save the JSON under results/<machine>/; where asv
# is installed, also run asv's grid for the CUDA entries into results/asv/<machine name>/, so
# that the GPU appears on the dashboard (make dashboard) beside the CPU machines.
#
#     bench/cuda_check.sh [TARGET]     TARGET: pytest-benchmark files or folder (default: bench/pytest_suite)
#     bench/cuda_check.sh --collect-only   list the CUDA-only code paths and the tests this script
#                                          would run, without a GPU (the suite checks the selection)
#
# Installs nothing and needs no network: the project goes on PYTHONPATH. Environment:
#   PYTHON             interpreter with numpy, torch, pytest, pytest-benchmark (default: python3)
#   BENCH_SELECT       pytest -k expression choosing what to time (default below; "large"
#                      also matches xlarge)
#   STEPBENCH_MACHINE  results folder name (default: the GPU's name, lower-case, dashed)
# Exits 2 before timing anything where torch:cuda cannot run; otherwise with the first
# failing stage's status, after running both stages.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TARGET=${1:-bench/pytest_suite}
SELECT=${BENCH_SELECT:-seed or tutorial or large}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Code that only runs on a CUDA device, so that no CPU machine's test run executes it: each line
# names it, then the tests that run it. Every test named here runs below, with every test whose
# id says cuda (the agreement of each CUDA entry among them).
CUDA_ONLY='TorchGraphStep: capture and replay of the whole step           test_graph_replays_count_adam_steps
_Adam with its step count in device tensors, advanced by replays  test_graph_replays_count_adam_steps
_TorchStep.sync: waits for queued device work                     test_sync_waits_for_queued_device_work
peak._measure_cuda and quick_gflops on cuda: the GPU GEMM peak    test_gemm_rates_count_two_flops_per_multiply_add'
select="cuda$(printf '%s\n' "$CUDA_ONLY" | awk '{print " or " $NF}' | sort -u | tr -d '\n')"
cuda_tests() {
    echo "== CUDA-only code paths and the tests that run them"
    printf '%s\n' "$CUDA_ONLY"
    echo "== agreement and CUDA-specific tests: -k '$select'"
    "$PYTHON" -m pytest tests -q -k "$select" -p no:cacheprovider "$@"
}
if [ "$TARGET" = "--collect-only" ]; then
    cuda_tests --collect-only
    exit
fi

"$PYTHON" -c '
import impls
for name, reason in impls.available().items():
    print(name.ljust(22), reason or "available")
' || exit 1

gpu=$("$PYTHON" -c '
import sys, impls
reason = impls.available().get("torch:cuda", "not registered")
if reason:
    sys.exit(f"torch:cuda cannot run here ({reason}): nothing checked or timed")
import torch
print(torch.cuda.get_device_name())
') || exit 2
machine=${STEPBENCH_MACHINE:-$(printf '%s' "$gpu" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9._-')}
out="results/$machine"
mkdir -p "$out"
stamp="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short HEAD 2>/dev/null || echo nogit)"
echo "GPU: $gpu -> $out"

cuda_tests
agree=$?

echo "== pytest-benchmark: $TARGET -k '$SELECT'"
"$PYTHON" -m pytest "$TARGET" -q -k "$SELECT" -p no:cacheprovider --benchmark-json="$out/pytest-benchmark-$stamp.json"
timed=$?

dashboard=0
if "$PYTHON" -c 'import asv' 2>/dev/null; then
    # Named like every machine's asv folder (bench/harness/machine.py: host, CPU, cores, GPU).
    asv_machine=$("$PYTHON" -m bench.harness.machine)
    echo "== asv: the CUDA entries -> results/asv/$asv_machine"
    "$PYTHON" -m bench.harness.machine register > /dev/null &&
        "$PYTHON" -m asv run --python=same --set-commit-hash HEAD --machine "$asv_machine" -b "'torch:cuda" &&
        "$PYTHON" -m bench.asvtools.results results/asv &&
        "$PYTHON" -m bench.harness.environment --save results/asv-environment
    dashboard=$?
else
    echo "== asv is not installed here: no dashboard results (pip install asv==0.6.6 to add them)"
fi

echo "agreement tests: exit $agree; timing: exit $timed; asv: exit $dashboard; results: $out/pytest-benchmark-$stamp.json"
[ "$agree" -ne 0 ] && exit "$agree"
[ "$timed" -ne 0 ] && exit "$timed"
exit "$dashboard"
