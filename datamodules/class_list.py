"""Class list files: which ImageNet synsets (WordNet ids) make up each class of a subset.

Format, one class per line, in class-index order::

    # comment (a ``#`` anywhere starts a comment)
    label wnid[,wnid...]

``label`` is one token (no spaces); the wnids after it are comma separated (spaces after commas are
allowed). Several wnids on one line are pooled into one class (``imagenet10``'s ``dog`` takes all
118 ILSVRC dog breeds). The shipped lists live in ``datamodules/class_lists/<name>.txt`` and are
selected by name (``"imagenet100"``, ``"imagenet10"``); anything else is read as a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CLASS_LIST_DIR = Path(__file__).parent / "class_lists"
WNID_PATTERN = re.compile(r"^n\d{8}$")


class ClassListError(ValueError):
    """A class list file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class ClassEntry:
    """One class of a subset: its label and the ImageNet synsets (wnids) pooled into it."""

    label: str
    wnids: tuple[str, ...]


def shipped_class_lists() -> list[str]:
    """Names of the class lists shipped with splitcv (file stems in ``datamodules/class_lists``)."""
    return sorted(p.stem for p in CLASS_LIST_DIR.glob("*.txt"))


def resolve_class_list(name_or_path: str | Path) -> Path:
    """The file for a shipped list name (``"imagenet100"``) or an existing path.

    Raises:
        ClassListError: neither a shipped name nor an existing file.
    """
    text = str(name_or_path)
    shipped = CLASS_LIST_DIR / f"{text}.txt"
    if "/" not in text and "\\" not in text and shipped.is_file():
        return shipped
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise ClassListError(
        f"class list {text!r} is neither a shipped list ({', '.join(shipped_class_lists())}) nor an existing "
        f"file; a class list has one line per class: 'label wnid[,wnid...]'"
    )


def parse_class_list(text: str, source: str = "<string>") -> list[ClassEntry]:
    """Parse the text of a class list (see the module docstring for the format).

    Raises:
        ClassListError: a line without wnids, a malformed wnid, a repeated label or wnid, or no classes;
            the message names ``source`` and the line number.
    """
    entries: list[ClassEntry] = []
    seen_labels: dict[str, int] = {}
    seen_wnids: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        where = f"{source}, line {number}"
        if len(parts) < 2:
            raise ClassListError(f"{where}: expected 'label wnid[,wnid...]', got {raw.strip()!r}")
        label, rest = parts
        wnids = tuple(w.strip() for w in rest.split(",") if w.strip())
        if not wnids:
            raise ClassListError(f"{where}: class {label!r} names no wnid")
        for wnid in wnids:
            if not WNID_PATTERN.match(wnid):
                raise ClassListError(f"{where}: {wnid!r} is not a WordNet id like 'n01530575'")
            if wnid in seen_wnids:
                raise ClassListError(f"{where}: wnid {wnid} already used on line {seen_wnids[wnid]}")
            seen_wnids[wnid] = number
        if label in seen_labels:
            raise ClassListError(f"{where}: label {label!r} already defined on line {seen_labels[label]}")
        seen_labels[label] = number
        entries.append(ClassEntry(label=label, wnids=wnids))
    if not entries:
        raise ClassListError(f"{source}: no classes (expected lines 'label wnid[,wnid...]')")
    return entries


def load_class_list(name_or_path: str | Path) -> list[ClassEntry]:
    """Read and parse a shipped list by name, or a class list file by path."""
    path = resolve_class_list(name_or_path)
    return parse_class_list(path.read_text(encoding="utf-8"), source=str(path))


def format_class_list(entries: list[ClassEntry], header: str = "") -> str:
    """The text of a class list file for ``entries`` (``header`` lines become comments)."""
    lines = [f"# {h}".rstrip() for h in header.splitlines()]
    lines += [f"{e.label} {','.join(e.wnids)}" for e in entries]
    return "\n".join(lines) + "\n"
