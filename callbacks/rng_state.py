"""Checkpoint the random number generators, so a resumed run draws what an uninterrupted one would.

Lightning restores weights, optimiser, schedulers and loop counters, but not the global RNGs: the
stochastic binarizer's noise (and any dropout) would differ after a resume. The data pipeline does not
depend on them: the order and augmentation of every sample follow from (seed, epoch, index)
(``datamodules.seeding``), and the loader's position within an epoch is checkpointed by Lightning
(``datamodules.loaders``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def _numpy_state_to_tensors(state: tuple) -> tuple:
    """NumPy's legacy state with the key array as a tensor (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(cached)


class RNGStateCheckpoint(Callback):
    """Saves the Python, NumPy, torch CPU (and CUDA) generator states with every checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": _numpy_state_to_tensors(np.random.get_state()),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        random.setstate(state_dict["python"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy(), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
