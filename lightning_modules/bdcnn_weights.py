"""Float classifier weights for the B-DCNN modules (the bit search and the quantised fine-tune read the same
checkpoints), so neither LightningModule imports the other for it."""

from __future__ import annotations

from torch import nn

from lightning_modules.checkpoint_init import InitReport, init_weights_from, load_state_dict_from_checkpoint


def load_classifier_weights(network: nn.Module, path: str) -> InitReport:
    """Load a classifier's weights: a ``QuantizedFinetune`` checkpoint of a float run (``model.*`` keys) or a
    bare state dict of the network; any other key is an error naming it."""
    keys = load_state_dict_from_checkpoint(path)
    prefix = "model." if any(k.startswith("model.") for k in keys) else ""
    return init_weights_from(network, path, key_map={prefix: ""})
