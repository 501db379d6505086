"""Studies beside the timing: the training dynamics (`make dynamics`)."""
