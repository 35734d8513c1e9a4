"""The decoded-image cache checks itself: deleted, truncated, resized, replaced and foreign entries are each
detected (on use, when the datasets are prepared, and by ``python -m datamodules.check --decoded-cache``), named,
and rebuilt to exactly what a fresh decode gives."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coding.image_channel import ClassicalChannel
from datamodules.check import main as check_main
from datamodules.decoded_cache import CacheEntryError, DecodedImageCache, read_record, source_digest
from datamodules.image_io import load_rgb

CHANNEL = ClassicalChannel("jpeg", quality=30)


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(20, 24), (18, 30), (32, 16)]):
        path = tmp_path / "src" / f"img{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def built(tmp_path: Path, sources: list[Path]) -> DecodedImageCache:
    cache = DecodedImageCache(tmp_path / "cache", CHANNEL.settings())
    assert cache.build(sources, CHANNEL) == len(sources)
    return cache


def entry(cache: DecodedImageCache, source: Path) -> tuple[Path, Path]:
    digest = source_digest(source)
    return cache.directory / f"{digest}.png", cache.directory / f"{digest}.json"


def direct_decode(source: Path) -> np.ndarray:
    return CHANNEL.transmit(load_rgb(source)).image


def assert_rebuilt(cache: DecodedImageCache, sources: list[Path], broken: Path, caplog, what: str) -> None:
    """``build`` names the bad entry and what is wrong, decodes exactly it again, and the result is a fresh decode."""
    with caplog.at_level(logging.WARNING, logger="datamodules.decoded_cache"):
        assert cache.build(sources, CHANNEL) == 1
    assert str(broken) in caplog.text and what in caplog.text
    for source in sources:
        cache.verify(source)
        np.testing.assert_array_equal(cache.loader()(source), direct_decode(source))
    assert cache.build(sources, CHANNEL) == 0


def test_a_fresh_cache_holds_direct_decodes_with_their_bytes_and_hashes(tmp_path, sources):
    cache = built(tmp_path, sources)
    for source in sources:
        record = cache.verify(source)
        png, _ = entry(cache, source)
        assert record.sha256 == hashlib.sha256(png.read_bytes()).hexdigest()
        assert record.bytes == CHANNEL.transmit(load_rgb(source)).bytes
        np.testing.assert_array_equal(cache.loader()(source), direct_decode(source))
    assert check_main(["--decoded-cache", str(tmp_path / "cache")]) == 0


def test_a_deleted_image_is_named_on_use_and_rebuilt(tmp_path, sources, caplog):
    cache = built(tmp_path, sources)
    png, _ = entry(cache, sources[1])
    png.unlink()
    with pytest.raises(CacheEntryError, match=f"{png}: decoded image missing"):
        cache.loader()(sources[1])
    assert_rebuilt(cache, sources, png, caplog, "decoded image missing")


def test_a_truncated_record_names_its_path_and_is_rebuilt(tmp_path, sources, caplog):
    cache = built(tmp_path, sources)
    _, record = entry(cache, sources[0])
    record.write_text(record.read_text()[:25])
    for call in (lambda: read_record(record), lambda: cache.record(sources[0]), lambda: cache.loader()(sources[0])):
        with pytest.raises(CacheEntryError, match=f"{record}: not a complete JSON record"):
            call()
    assert_rebuilt(cache, sources, record, caplog, "not a complete JSON record")


def test_a_resized_image_is_detected_by_its_recorded_size_and_rebuilt(tmp_path, sources, caplog):
    cache = built(tmp_path, sources)
    png, _ = entry(cache, sources[2])
    Image.open(png).resize((8, 8)).save(png)  # 16×32 → 8×8
    with pytest.raises(CacheEntryError, match=f"{png}: is 8×8 pixels, its record .* says 16×32"):
        cache.loader()(sources[2])
    assert_rebuilt(cache, sources, png, caplog, "is 8×8 pixels")


def test_an_image_of_the_right_size_but_other_content_fails_its_hash(tmp_path, sources, caplog):
    cache = built(tmp_path, sources)
    png, _ = entry(cache, sources[0])
    pixels = load_rgb(png).copy()
    pixels[0, 0] ^= 1  # one pixel's lowest bit
    Image.fromarray(pixels).save(png)
    with pytest.raises(CacheEntryError, match="content hash .* differs"):
        cache.loader()(sources[0])
    assert_rebuilt(cache, sources, png, caplog, "content hash")


def test_foreign_entries_are_detected_and_rebuilt(tmp_path, sources, caplog):
    cache = built(tmp_path, sources)
    # another image's entry copied under this source's name
    png0, record0 = entry(cache, sources[0])
    png1, record1 = entry(cache, sources[1])
    shutil.copy(png1, png0)
    shutil.copy(record1, record0)
    with pytest.raises(CacheEntryError, match=f"{record0}: foreign entry: its record is of .*img1.jpg"):
        cache.loader()(sources[0])
    assert_rebuilt(cache, sources, record0, caplog, "foreign entry")
    # the same image's entry from a cache of other settings (another quality) copied in
    other_channel = ClassicalChannel("jpeg", quality=90)
    other = DecodedImageCache(tmp_path / "cache", other_channel.settings())
    other.build(sources[:1], other_channel)
    for part in entry(other, sources[0]):
        shutil.copy(part, cache.directory / part.name)
    caplog.clear()
    with pytest.raises(CacheEntryError, match=f"written for cache {other.key}, this is {cache.key}"):
        cache.loader()(sources[0])
    assert_rebuilt(cache, sources, record0, caplog, "foreign entry")


def test_the_check_command_names_every_bad_entry_and_can_delete_them(tmp_path, sources, capsys):
    cache = built(tmp_path, sources)
    png0, record0 = entry(cache, sources[0])
    png1, _ = entry(cache, sources[1])
    _, record2 = entry(cache, sources[2])
    png0.unlink()
    Image.open(png1).resize((4, 4)).save(png1)
    record2.write_text("{")
    (cache.directory / ".x.png.123.tmp").write_bytes(b"partial")
    report = tmp_path / "problems.txt"
    assert check_main(["--decoded-cache", str(tmp_path / "cache"), "--output", str(report)]) == 1
    out = capsys.readouterr().out
    for path, what in ((png0, "decoded image missing"), (png1, "is 4×4 pixels"), (record2, "not a complete JSON")):
        assert any(str(path) in line and what in line for line in out.splitlines()), (path, out)
    assert ".x.png.123.tmp: temporary file" in out
    assert len(report.read_text().splitlines()) == 4
    # --delete-bad removes them; the next build decodes exactly those three again, and the check is clean
    assert check_main(["--decoded-cache", str(cache.directory), "--delete-bad"]) == 1
    assert cache.build(sources, CHANNEL) == 3
    assert check_main(["--decoded-cache", str(tmp_path / "cache")]) == 0
    settings = json.loads((cache.directory / "settings.json").read_text())
    assert settings == CHANNEL.settings()


def test_the_check_command_refuses_a_folder_that_is_no_cache(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert check_main(["--decoded-cache", str(tmp_path / "empty")]) == 2
    assert "is no decoded-image cache" in capsys.readouterr().err
