"""Messages that say nothing to a splitcv user, removed from every command's output.

Each entry is a known message with a reason; anything else Lightning, PyTorch or W&B says still shows.
"""

from __future__ import annotations

import logging
import warnings

IGNORED_WARNINGS = (
    # Lightning 2.6's pytree helper on torch >= 2.10: an internal deprecation the user cannot act on.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # Frozen parts (edge trunks, compressors, teachers) are kept in eval() on purpose (docs/design.md: "Frozen
    # parts stay frozen"); Lightning warns about every module in eval mode at the start of training.
    r"Found \d+ module\(s\) in eval mode at the start of training.*",
)
IGNORED_INFO_PREFIXES = ("💡 Tip: For seamless cloud logging",)  # Lightning's advertisement for its own logger


class _DropInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(IGNORED_INFO_PREFIXES)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropInfo) for f in logger.filters):
            logger.addFilter(_DropInfo())
