"""Training: the offline-then-online loop, its state and phases, checkpoints, metrics and
config validation."""
