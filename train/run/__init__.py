"""One run's lifecycle: device and threads, the training loop, the run directory, checkpoints,
distributed setup, the optimizer and fault injection."""
