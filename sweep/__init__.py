"""Orchestration of MTS sweeps: Hydra configs, the Ray Tune trainable, the launcher and the CLI."""
