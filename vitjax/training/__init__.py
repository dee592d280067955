"""Training: the loop (``trainer``), its state, optimizer, checkpoints, workdirs and metric logs."""
