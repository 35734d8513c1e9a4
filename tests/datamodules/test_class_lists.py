"""The shipped class lists parse, and class list files are validated."""

from __future__ import annotations

import pytest

from datamodules.class_list import (
    ClassEntry,
    ClassListError,
    format_class_list,
    load_class_list,
    parse_class_list,
    shipped_class_lists,
)
from datamodules.fixtures import write_imagenet
from datamodules.imagenet_subset import ImageNetLayoutError, ImageNetSubset

# Tian et al. 2019 (CMC) ImageNet-100, copied independently of the shipped file.
CMC_FIRST_AND_LAST = {"n02869837", "n01749939", "n02488291", "n01855672", "n02090622"}


def test_shipped_lists_are_found_by_name() -> None:
    assert {"imagenet10", "imagenet100"} <= set(shipped_class_lists())


def test_imagenet100_has_100_unique_wnids() -> None:
    entries = load_class_list("imagenet100")
    wnids = [w for e in entries for w in e.wnids]
    assert len(entries) == 100
    assert len(wnids) == 100 == len(set(wnids))
    assert all(len(e.wnids) == 1 for e in entries)
    assert CMC_FIRST_AND_LAST <= set(wnids)
    assert wnids == sorted(wnids)  # class index order = ImageFolder order


def test_imagenet10_labels_in_paper_order_each_with_wnids() -> None:
    entries = load_class_list("imagenet10")
    labels = [e.label for e in entries]
    assert labels == ["bird", "car", "cat", "dog", "flower", "guitar", "insect", "person", "ship", "vegetable"]
    assert all(len(e.wnids) >= 1 for e in entries)
    by_label = {e.label: e.wnids for e in entries}
    assert len(by_label["dog"]) == 118 and len(by_label["bird"]) == 59 and len(by_label["insect"]) == 27
    assert set(by_label["guitar"]) == {"n02676566", "n03272010"}  # acoustic, electric
    all_wnids = [w for e in entries for w in e.wnids]
    assert len(all_wnids) == len(set(all_wnids))


def test_parse_comments_groups_and_spaces() -> None:
    text = "# header\nfoo n00000001, n00000002  # trailing\n\nbar n00000003\n"
    assert parse_class_list(text) == [
        ClassEntry("foo", ("n00000001", "n00000002")),
        ClassEntry("bar", ("n00000003",)),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo\n", "line 1"),
        ("foo n123\n", "'n123' is not a WordNet id"),
        ("foo n00000001\nbar n00000001\n", "already used on line 1"),
        ("foo n00000001\nfoo n00000002\n", "already defined on line 1"),
        ("# only comments\n", "no classes"),
    ],
)
def test_malformed_lists_fail_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ClassListError, match=message):
        parse_class_list(text, source="my.txt")


def test_unknown_list_name_fails_listing_shipped_ones() -> None:
    with pytest.raises(ClassListError, match="imagenet10"):
        load_class_list("imagenet7")


def test_format_round_trips(tmp_path) -> None:
    entries = [ClassEntry("a", ("n00000001", "n00000002")), ClassEntry("b", ("n00000003",))]
    path = tmp_path / "list.txt"
    path.write_text(format_class_list(entries, header="two\nlines"))
    assert load_class_list(str(path)) == entries


def test_list_naming_absent_wnid_fails_naming_it(tmp_path) -> None:
    root = write_imagenet(tmp_path / "in", class_list="imagenet10", wnids_per_class=1, train_per_wnid=1, val_per_wnid=1)
    listed = tmp_path / "list.txt"
    listed.write_text("bird n01514668\nunicorn n09999999\n")
    dm = ImageNetSubset(str(root), class_list=str(listed), num_workers=0, pin_memory=False)
    with pytest.raises(ImageNetLayoutError, match=r"n09999999 \(unicorn\)"):
        dm.setup("fit")
    # the shipped list names wnids that this one-wnid-per-class fixture lacks (e.g. the second bird)
    with pytest.raises(ImageNetLayoutError, match="n01514859"):
        ImageNetSubset(str(root), class_list="imagenet10", num_workers=0, pin_memory=False).setup("fit")
