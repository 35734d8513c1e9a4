"""Matplotlib figures (headless) shared by callbacks, LightningModules and benchmarks."""
