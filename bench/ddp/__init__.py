"""The data-parallel step measured: rank scaling for `make bench` (scaling) and the torchrun entry point (torchrun)."""
