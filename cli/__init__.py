"""What the command line needs beside LightningCLI: run directory, run lock, W&B run id, saved configs.

Not Callbacks (those live in :mod:`callbacks`) and not ``runs/`` (that is where runs are written).
"""
