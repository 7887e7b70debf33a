"""Experiment tracking: loss curves to wandb, and a reader for wandb's offline run files."""
