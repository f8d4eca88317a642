"""Training: the loop (``engine``), losses, optimiser, distributed set-up, checkpoints, the suite runner."""
