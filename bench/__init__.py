"""Timing of the training step, in subpackages by role.

benchmarks/    asv's suite alone (asv.conf.json's benchmark_dir: asv imports every module there)
harness/       what every harness shares: the grid, setup and agreement verdicts, timing,
               the GEMM peak, the environment record, the machine's name, the load check, the CLI rules
pytest_suite/  the pytest-benchmark suite
job/           `make bench` (python -m bench): the main job, its tables and plots
gate/          `python -m bench compare`: the regression gate
asvtools/      asv's results, scratch configurations, spreads, a full run's estimate, and the offline dashboard
ddp/           the data-parallel figures of `make bench` and the torchrun entry point
studies/       the training-dynamics study (`make dynamics`)
"""
