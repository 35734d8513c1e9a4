"""A cache of decoded datasets on disk: every source image sent once through a channel, decoded, kept.

A frozen compressor's eval output is deterministic, so decoding the dataset every epoch repeats the
same work; the cache does it once per (channel settings, source file) and every run and regime that
needs the same decoded images reads them back. :class:`DecodingLoader` is the uncached alternative
(every image decoded again whenever it is read).

Layout::

    <root>/<channel>-<key>/settings.json        what the key hashes (channel, k, codec config + weights SHA-256 …)
    <root>/<channel>-<key>/<digest>.png         the decoded image (lossless, the source's size)
    <root>/<channel>-<key>/<digest>.json        its record: source path and bytes, bytes sent, size, quality,
                                                the SHA-256 of the PNG file and the cache key it was written for

``key`` is the SHA-256 of the channel settings (:meth:`coding.image_channel.RNNChannel.settings` holds
the SHA-256 of the compressor's weights, so another checkpoint never reads this one's images);
``digest`` hashes the source file's resolved path, size and modification time, so an edited source is
decoded again. Each file is written to a temporary name and renamed, the record last: an entry exists
only when complete, and builders that run at once (array jobs of one sweep, DDP ranks) can only
duplicate work, never corrupt an entry.

Nothing read back is trusted. An entry is *verified* (:meth:`DecodedImageCache.verify`) when the datasets
are prepared (:meth:`DecodedImageCache.build`, before every fit / validate / test) and by
``python -m datamodules.check --decoded-cache DIR``: its record must be complete JSON with every field
of the right type, written for this cache (``cache`` = the key) and for this source (its path, and the
source file's current size and pixel size); the PNG must be present, readable, of the recorded height
and width, and hash to the SHA-256 recorded when it was written. Every entry that fails is named with
what is wrong and rebuilt (``build``); the check command names it (and ``--delete-bad`` removes it, so
the next run rebuilds it). On use, :class:`CachedImageLoader` checks the same of each image it reads
(record, presence, readability, size, hash) and names the file if anything is off.

Size: one lossless PNG per image. Decoded images are smooth, so they compress better than the
sources' noise does; the README gives the sizes measured here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from rich.progress import track
from torch.utils.data import DataLoader, Dataset

from coding.image_channel import Transmission
from datamodules.image_io import UnreadableImageError, load_rgb

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
REBUILT_ON_NEXT_RUN = (
    "every entry is verified, and a bad one rebuilt, when the next fit / validate / test prepares its datasets; "
    "`python -m datamodules.check --decoded-cache DIR` lists them all"
)


class CacheEntryError(ValueError):
    """An entry of a decoded-image cache is missing, unreadable, or not what its record says; names the file."""


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
        sha256: in a cache: SHA-256 (hex) of the decoded image's PNG file, recorded when it was written.
        cache: in a cache: the key of the cache the entry was written for (its settings' hash).
    """

    source: str
    source_bytes: int
    bytes: int
    height: int
    width: int
    quality: int | None = None
    fits: bool = True
    sha256: str | None = None
    cache: str | None = None


_RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "source_bytes": (int,),
    "bytes": (int,),
    "height": (int,),
    "width": (int,),
    "quality": (int, type(None)),
    "fits": (bool,),
    "sha256": (str,),
    "cache": (str,),
}


def read_record(path: str | Path) -> ImageRecord:
    """A cache entry's record, checked field by field.

    Raises:
        CacheEntryError: the record is missing, unreadable, not complete JSON (e.g. truncated), or a field is
            missing, unexpected or of the wrong type; the message names ``path``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise CacheEntryError(f"{path}: record missing") from err
    except (OSError, UnicodeDecodeError) as err:
        raise CacheEntryError(f"{path}: cannot read the record: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CacheEntryError(f"{path}: not a complete JSON record (truncated or overwritten?): {err}") from err
    if not isinstance(data, dict):
        raise CacheEntryError(f"{path}: a record is a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(ImageRecord)}
    if missing := sorted(names - set(data)):
        raise CacheEntryError(f"{path}: record lacks {', '.join(missing)} (written by an older splitcv?)")
    if unexpected := sorted(set(data) - names):
        raise CacheEntryError(f"{path}: record has unexpected fields {', '.join(unexpected)}")
    for name, types in _RECORD_TYPES.items():
        value = data[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise CacheEntryError(
                f"{path}: record field {name!r} is {value!r}, expected {' or '.join(t.__name__ for t in types)}"
            )
    if min(data["source_bytes"], data["bytes"], data["height"], data["width"]) < 0:
        raise CacheEntryError(f"{path}: record has a negative size")
    return ImageRecord(**data)


def source_record(path: str | Path) -> ImageRecord:
    """The record of sending the source file itself (its size read from the header, not decoded)."""
    path = Path(path)
    width, height = _pixel_size(path)
    size = path.stat().st_size
    return ImageRecord(str(path), size, size, height, width)


def _pixel_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the image file's header; ``UnreadableImageError`` naming it."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from err


def source_digest(path: str | Path) -> str:
    """Hash of the source file's resolved path, size and modification time (its key in a cache)."""
    path = Path(path)
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]


def settings_key(settings: Mapping[str, Any]) -> str:
    """The key of a cache: the first 16 hex digits of the SHA-256 of its settings as sorted JSON."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:16]


def _write_atomic(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def verify_entry(
    record_path: Path,
    image_path: Path,
    source: str | Path | None,
    key: str | None,
    decode: bool = False,
    source_pixels: bool = True,
) -> tuple[ImageRecord, np.ndarray | None]:
    """Check one entry: its record (:func:`read_record`), that it was written for cache ``key`` and for
    ``source`` (path, current file size and pixel size; ``None``: the source its record names, when it still
    exists), and its PNG: present, readable, the recorded height and width, the recorded SHA-256.

    ``source_pixels=False`` skips reading the source's header for its pixel size (on use: the build checked it,
    and the source's path, size and modification time are in the entry's name).

    Returns:
        The record, and with ``decode`` the decoded image (uint8 (H, W, 3)).

    Raises:
        CacheEntryError: naming the file and what is wrong.
    """
    record = read_record(record_path)
    if key is not None and record.cache != key:
        raise CacheEntryError(f"{record_path}: foreign entry: written for cache {record.cache}, this is {key}")
    if source is not None and record.source != str(source) and Path(record.source).resolve() != Path(source).resolve():
        raise CacheEntryError(f"{record_path}: foreign entry: its record is of {record.source}, not {source}")
    source = Path(record.source)
    if source.is_file():
        if record.source_bytes != source.stat().st_size:
            raise CacheEntryError(
                f"{record_path}: records {record.source_bytes} bytes for {source}, which now has {source.stat().st_size}"
            )
        width, height = _pixel_size(source) if source_pixels else (record.width, record.height)
        if (record.height, record.width) != (height, width):
            raise CacheEntryError(
                f"{record_path}: records {record.width}×{record.height} pixels for {source}, which is {width}×{height}"
            )
    try:
        data = image_path.read_bytes()
    except FileNotFoundError as err:
        raise CacheEntryError(f"{image_path}: decoded image missing (its record {record_path} exists)") from err
    except OSError as err:
        raise CacheEntryError(f"{image_path}: cannot read the decoded image: {err}") from err
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            pixels = np.asarray(image.convert("RGB")) if decode else None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise CacheEntryError(f"{image_path}: not a readable image: {err}") from err
    if size != (record.width, record.height):
        raise CacheEntryError(
            f"{image_path}: is {size[0]}×{size[1]} pixels, its record {record_path} says {record.width}×{record.height}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.sha256:
        raise CacheEntryError(
            f"{image_path}: content hash {digest[:16]}… differs from the one recorded when it was written "
            f"({record.sha256[:16]}…, in {record_path}): replaced or damaged"
        )
    return record, pixels


@dataclass(frozen=True)
class CachedImageLoader:
    """``path -> uint8 (H, W, 3)`` decoded image from a cache directory (a dataset's ``image_loader``).

    Every image read is checked (:func:`verify_entry`: record, presence, readability, size, content hash).
    Picklable, so DataLoader workers get it with the dataset.
    """

    directory: str
    key: str | None = None

    def __call__(self, path: str | Path) -> np.ndarray:
        digest = source_digest(path)
        record_path = Path(self.directory) / f"{digest}.json"
        if not record_path.is_file():
            raise CacheEntryError(
                f"{path} has no decoded image in the cache {self.directory} (no {record_path.name}: built for other "
                f"files, or the source changed since); {REBUILT_ON_NEXT_RUN}"
            )
        try:
            _, pixels = verify_entry(
                record_path, record_path.with_suffix(".png"), path, self.key, decode=True, source_pixels=False
            )
        except CacheEntryError as err:
            raise CacheEntryError(f"{err}; {REBUILT_ON_NEXT_RUN}") from err
        assert pixels is not None
        return pixels


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
        self.key = settings_key(self.settings)
        self.directory = Path(root).expanduser() / f"{self.settings.get('channel', 'channel')}-{self.key}"

    def _paths(self, source: str | Path) -> tuple[Path, Path]:
        digest = source_digest(source)
        return self.directory / f"{digest}.png", self.directory / f"{digest}.json"

    def has(self, source: str | Path) -> bool:
        """Whether ``source`` has a record in the cache (not verified: see :meth:`verify`)."""
        return self._paths(source)[1].is_file()

    def verify(self, source: str | Path) -> ImageRecord:
        """The record of ``source``'s entry after checking the whole entry (:func:`verify_entry`).

        Raises:
            CacheEntryError: the entry is missing or wrong; the message names the file and what is wrong.
        """
        image_path, record_path = self._paths(source)
        return verify_entry(record_path, image_path, source, self.key)[0]

    def write(self, source: str | Path, sent: Transmission) -> ImageRecord:
        """Store one decoded image and its record, with the PNG's SHA-256 (atomically; the record last)."""
        image_path, record_path = self._paths(source)
        source = Path(source)
        height, width = sent.image.shape[:2]
        png = _png_bytes(sent.image)
        record = ImageRecord(
            str(source), source.stat().st_size, sent.bytes, height, width, sent.quality, sent.fits,
            hashlib.sha256(png).hexdigest(), self.key,
        )  # fmt: skip
        _write_atomic(image_path, lambda p: p.write_bytes(png))
        _write_atomic(record_path, lambda p: p.write_text(json.dumps(asdict(record))))
        return record

    def record(self, source: str | Path) -> ImageRecord:
        """The stored record of ``source`` (its fields checked; the PNG is checked by :meth:`verify` and on use).

        Raises:
            CacheEntryError: no record, or not a complete one; names the file.
        """
        record_path = self._paths(source)[1]
        if not record_path.is_file():
            raise CacheEntryError(f"{source} has not been decoded into the cache {self.directory} (no {record_path})")
        record = read_record(record_path)
        if record.cache != self.key:
            raise CacheEntryError(f"{record_path}: foreign entry: written for cache {record.cache}, this is {self.key}")
        return record

    def loader(self) -> CachedImageLoader:
        """The ``image_loader`` that reads (and checks) this cache's decoded images."""
        return CachedImageLoader(str(self.directory), self.key)

    def disk_bytes(self) -> int:
        """Bytes the cache directory takes (decoded PNGs and records)."""
        return sum(p.stat().st_size for p in self.directory.glob("*") if p.is_file())

    def _check_settings_file(self) -> None:
        """Write ``settings.json`` when absent; rewrite it (with a warning naming it) when it is not these settings."""
        path = self.directory / SETTINGS_FILE
        if path.is_file():
            try:
                if json.loads(path.read_text(encoding="utf-8")) == self.settings:
                    return
                problem = "holds other settings than the ones this cache's key hashes"
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                problem = f"is not readable JSON ({err})"
            log.warning("%s %s; rewritten", path, problem)
        _write_atomic(path, lambda p: p.write_text(json.dumps(self.settings, indent=2, sort_keys=True)))

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
        """Verify this rank's share of the ``sources``' entries and decode those missing or wrong; returns how many.

        Entries that exist but fail :meth:`verify` (deleted or unreadable PNG, truncated record, another size,
        another content, a foreign entry) are logged with what is wrong, removed and decoded again.

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
        mine = sorted({Path(s) for s in list(sources)[rank::world_size]})
        bad: list[str] = []
        present, pending = [], []
        for source in mine:  # an entry with either file present is verified; one with neither is simply new
            (present if any(p.exists() for p in self._paths(source)) else pending).append(source)
        for source in track(present, description=f"verifying {self.directory.name}") if present else ():
            try:
                self.verify(source)
            except CacheEntryError as err:
                bad.append(str(err))
                self._paths(source)[1].unlink(missing_ok=True)  # the record first: the entry is gone, not wrong
                pending.append(source)
        if bad:
            shown = "\n  ".join(bad[:10]) + (f"\n  … and {len(bad) - 10} more" if len(bad) > 10 else "")
            log.warning("%s: %d bad entries, rebuilding them:\n  %s", self.directory, len(bad), shown)
        if not pending:
            return 0
        pending.sort()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_settings_file()
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


@dataclass(frozen=True)
class EntryProblem:
    """A file of a cache directory that is not a complete, verified entry, and why."""

    path: str
    error: str


def cache_directories(path: str | Path) -> list[Path]:
    """``path`` itself when it is one cache (it holds ``settings.json``), else the caches directly under it.

    Raises:
        FileNotFoundError: ``path`` does not exist, or holds no cache.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"decoded-image cache {path} does not exist")
    if (path / SETTINGS_FILE).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / SETTINGS_FILE).is_file())
    if not found:
        raise FileNotFoundError(
            f"{path} is no decoded-image cache: neither it nor a folder directly under it holds {SETTINGS_FILE} "
            "(give decoded_cache_dir, or one <channel>-<key> folder in it)"
        )
    return found


def check_directory(directory: str | Path, progress: bool = False) -> tuple[int, list[EntryProblem]]:
    """Verify every entry of one cache directory (:func:`verify_entry`); the entries checked and the problems.

    Besides bad entries, it names: a ``settings.json`` that is unreadable or does not hash to the folder's key;
    a PNG without a record (a write interrupted between the two files); a record whose source file changed
    or is gone (never read again: stale, safe to delete); temporary files left by a killed writer.
    """
    directory = Path(directory)
    problems: list[EntryProblem] = []
    settings_path = directory / SETTINGS_FILE
    key = directory.name.rpartition("-")[2]
    try:
        settings = json.loads(settings_path.read_text(encoding="utf-8"))
        if not isinstance(settings, dict) or settings_key(settings) != key:
            problems.append(EntryProblem(str(settings_path), f"does not hash to this folder's key {key}"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(EntryProblem(str(settings_path), f"not readable JSON: {err}"))
    records = sorted(p for p in directory.glob("*.json") if p.name != SETTINGS_FILE and not p.name.startswith("."))
    for path in sorted(directory.glob(".*.tmp")):
        problems.append(EntryProblem(str(path), "temporary file of an interrupted write (safe to delete)"))
    for path in sorted(directory.glob("*.png")):
        if not path.with_suffix(".json").is_file():
            problems.append(EntryProblem(str(path), "decoded image without a record (interrupted write); rebuilt"))
    for record_path in track(records, description=f"checking {directory.name}", disable=not progress):
        try:
            record, _ = verify_entry(record_path, record_path.with_suffix(".png"), None, key, decode=True)
        except CacheEntryError as err:
            problems.append(EntryProblem(str(record_path), str(err).removeprefix(f"{record_path}: ")))
            continue
        source = Path(record.source)
        if not source.is_file() or source_digest(source) != record_path.stem:
            problems.append(EntryProblem(str(record_path), f"stale: its source {source} is gone or changed"))
    return len(records), problems


def remove_entry(path: str | Path) -> None:
    """Delete the cache entry a problem names (record first, then the PNG; the next build decodes it again)."""
    path = Path(path)
    if path.name == SETTINGS_FILE:
        return
    for part in (path.with_suffix(".json"), path.with_suffix(".png")) if not path.name.endswith(".tmp") else (path,):
        part.unlink(missing_ok=True)
