"""A cache of decoded datasets on disk: every source image sent once through a channel, decoded, kept.

A frozen compressor's eval output is deterministic, so decoding the dataset every epoch repeats the
same work; the cache does it once per (channel settings, source file) and every run and regime that
needs the same decoded images reads them back. :class:`DecodingLoader` is the uncached alternative
(every image decoded again whenever it is read).

Layout::

    <root>/<channel>-<key>/settings.json        what the key hashes (channel, k, codec config + weights SHA-256 …)
    <root>/<channel>-<key>/<digest>.png         the decoded image (lossless, the source's size)
    <root>/<channel>-<key>/<digest>.json        its record: source path and bytes, bytes sent, size, quality

``key`` is the SHA-256 of the channel settings (:meth:`coding.image_channel.RNNChannel.settings` holds
the SHA-256 of the compressor's weights, so another checkpoint never reads this one's images);
``digest`` hashes the source file's resolved path, size and modification time, so an edited source is
decoded again. Each file is written to a temporary name and renamed, the record last: an entry exists
only when complete, and builders that run at once (array jobs of one sweep, DDP ranks) can only
duplicate work, never corrupt an entry.

Size: one lossless PNG per image. Decoded images are smooth, so they compress better than the
sources' noise does; the README gives the sizes measured here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from coding.image_channel import Transmission
from datamodules.image_io import UnreadableImageError, load_rgb


@dataclass(frozen=True)
class ImageRecord:
    """What one source image costs: its file, and what the channel sent for it.

    Attributes:
        source: path of the source file.
        source_bytes: size of the source file (the JPEG as stored in the dataset).
        bytes: bytes sent for it (the stream or codec file; ``source_bytes`` when the original is sent).
        height: image height in pixels.
        width: image width in pixels.
        quality: classical codecs: the quality used.
        fits: ``False`` when a byte budget could not be met at the codec's lowest quality.
    """

    source: str
    source_bytes: int
    bytes: int
    height: int
    width: int
    quality: int | None = None
    fits: bool = True


def source_record(path: str | Path) -> ImageRecord:
    """The record of sending the source file itself (its size read from the header, not decoded)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from err
    size = path.stat().st_size
    return ImageRecord(str(path), size, size, height, width)


def source_digest(path: str | Path) -> str:
    """Hash of the source file's resolved path, size and modification time (its key in a cache)."""
    path = Path(path)
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]


def _write_atomic(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


@dataclass(frozen=True)
class CachedImageLoader:
    """``path -> uint8 (H, W, 3)`` decoded image from a cache directory (a dataset's ``image_loader``).

    Picklable, so DataLoader workers get it with the dataset.
    """

    directory: str

    def __call__(self, path: str | Path) -> np.ndarray:
        decoded = Path(self.directory) / f"{source_digest(path)}.png"
        if not decoded.is_file():
            raise FileNotFoundError(
                f"{path} has no decoded image in the cache {self.directory} (built for other files, or the "
                "source changed since); run again to build the missing entries"
            )
        return load_rgb(decoded)


@dataclass(frozen=True)
class DecodingLoader:
    """``path -> uint8 (H, W, 3)`` decoded image, computed on every call and never stored: what the cache saves.

    The channels run in order on the source image, each given the bytes the previous one sent as its budget
    (the recurrent codec, then a classical codec matched to it); the last one's decoded image is returned.
    Runs wherever the dataset runs (DataLoader workers), so the channels must be picklable and on the CPU.
    """

    channels: tuple

    def transmit(self, path: str | Path) -> tuple[Transmission, ImageRecord]:
        """The last channel's transmission of the source file, and its record."""
        path = Path(path)
        image = load_rgb(path)
        sent: Transmission | None = None
        for channel in self.channels:
            sent = channel.transmit(image, None if sent is None else sent.bytes)
        assert sent is not None, "DecodingLoader needs at least one channel"
        height, width = image.shape[:2]
        return sent, ImageRecord(str(path), path.stat().st_size, sent.bytes, height, width, sent.quality, sent.fits)

    def __call__(self, path: str | Path) -> np.ndarray:
        return self.transmit(path)[0].image


class _Pending(Dataset):
    """Source images still to decode: each item reads one (and transmits it, when done in the workers)."""

    def __init__(self, sources: Sequence[Path], cache: DecodedImageCache, channel: Any, budgets: Mapping) -> None:
        self.sources = list(sources)
        self.cache = cache
        self.channel = channel
        self.budgets = budgets

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[Path, np.ndarray | None]:
        source = self.sources[index]
        image = load_rgb(source)
        if self.channel is None:
            return source, image
        self.cache.write(source, self.channel.transmit(image, self.budgets.get(str(source))))
        return source, None


def _as_is(item: Any) -> Any:
    return item


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


class DecodedImageCache:
    """Decoded images of one channel setting under ``root`` (see the module docstring).

    Args:
        root: folder holding the caches of every setting (shared between runs).
        settings: JSON-serialisable description of everything that determines the decoded images.
    """

    def __init__(self, root: str | Path, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        text = json.dumps(self.settings, sort_keys=True)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.directory = Path(root).expanduser() / f"{self.settings.get('channel', 'channel')}-{key}"

    def _paths(self, source: str | Path) -> tuple[Path, Path]:
        digest = source_digest(source)
        return self.directory / f"{digest}.png", self.directory / f"{digest}.json"

    def has(self, source: str | Path) -> bool:
        """Whether the decoded image of ``source`` and its record are complete in the cache."""
        return self._paths(source)[1].is_file()

    def write(self, source: str | Path, sent: Transmission) -> ImageRecord:
        """Store one decoded image and its record (atomically; the record last)."""
        image_path, record_path = self._paths(source)
        source = Path(source)
        height, width = sent.image.shape[:2]
        record = ImageRecord(str(source), source.stat().st_size, sent.bytes, height, width, sent.quality, sent.fits)
        _write_atomic(image_path, lambda p: Image.fromarray(sent.image).save(p, format="PNG"))
        _write_atomic(record_path, lambda p: p.write_text(json.dumps(asdict(record))))
        return record

    def record(self, source: str | Path) -> ImageRecord:
        """The stored record of ``source`` (raises ``FileNotFoundError`` if it was not decoded yet)."""
        record_path = self._paths(source)[1]
        if not record_path.is_file():
            raise FileNotFoundError(f"{source} has not been decoded into the cache {self.directory}")
        return ImageRecord(**json.loads(record_path.read_text()))

    def loader(self) -> CachedImageLoader:
        """The ``image_loader`` that reads this cache's decoded images."""
        return CachedImageLoader(str(self.directory))

    def disk_bytes(self) -> int:
        """Bytes the cache directory takes (decoded PNGs and records)."""
        return sum(p.stat().st_size for p in self.directory.glob("*") if p.is_file())

    def build(
        self,
        sources: Sequence[str | Path],
        channel: Any,
        *,
        budgets: Mapping[str, int] | None = None,
        num_workers: int = 0,
        in_workers: bool = True,
        rank: int = 0,
        world_size: int = 1,
        description: str = "decoding",
    ) -> int:
        """Decode the ``sources`` not in the cache yet (this rank's share of them); returns how many.

        Args:
            sources: source image files.
            channel: an object with ``transmit(image, budget) -> Transmission`` (:mod:`coding.image_channel`).
            budgets: per-source byte budgets (``str(path) -> bytes``) for a channel matched to bytes.
            num_workers: DataLoader worker processes that read the sources (and, with ``in_workers``,
                run the channel: classical codecs; a learned codec on the CPU).
            in_workers: run the channel in the workers; otherwise in this process (e.g. on its GPU).
            rank, world_size: split the work between processes (DDP ranks): this one does
                ``sources[rank::world_size]``.
            description: label of the progress bar.
        """
        budgets = dict(budgets or {})
        mine = [Path(s) for s in list(sources)[rank::world_size]]
        pending = sorted({s for s in mine if not self.has(s)})
        if not pending:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        settings_path = self.directory / "settings.json"
        if not settings_path.is_file():
            _write_atomic(settings_path, lambda p: p.write_text(json.dumps(self.settings, indent=2, sort_keys=True)))
        loader = DataLoader(
            _Pending(pending, self, channel if in_workers else None, budgets),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_as_is,
            worker_init_fn=_one_thread if num_workers > 0 else None,
        )
        for source, image in track(loader, total=len(pending), description=f"{description} ({self.directory.name})"):
            if image is not None:
                self.write(source, channel.transmit(image, budgets.get(str(source))))
        return len(pending)
