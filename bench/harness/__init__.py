"""What every harness shares: the grid, setup and agreement verdicts, timing, GEMM peak, environment, machine name, load, CLI rules."""
