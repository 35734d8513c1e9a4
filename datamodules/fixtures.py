"""Writers of tiny datasets in the real on-disk formats, for tests and CPU demos.

Each writer produces a few dozen images with simple, learnable content: every class is a coloured
shape of its own (class k: colour k, shape k mod 5) on a noisy grey background, at a random position
and size (detection objects never overlap), so a tiny model can learn it in a few steps and detection boxes are known exactly.

- ``write_imagenet``: ``train/<wnid>/<wnid>_<n>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG``
  (layout ``ilsvrc``) or ``<wnid>/<wnid>_<n>.JPEG`` (layout ``folders``), with real wnids taken from a
  shipped class list, plus ``class_list.txt`` naming exactly the wnids written.
- ``write_cifar10``: ``cifar-10-batches-py/data_batch_1..5``, ``test_batch`` and ``batches.meta``,
  pickles with the keys of the real files (their md5s differ from the real ones, so read them with
  ``verify_checksums=False``).
- ``write_voc``: ``VOCdevkit/VOC2007`` (trainval + test) and ``VOCdevkit/VOC2012`` (trainval), with
  ``Annotations/*.xml``, ``JPEGImages/*.jpg`` and ``ImageSets/Main/{train,val,trainval,test}.txt``;
  a few objects are marked ``difficult`` and one VOC2012 annotation has no object at all.

Command line (used by the Makefile's demo step)::

    python -m datamodules.fixtures {imagenet,cifar10,voc} DIR
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw

from datamodules.class_list import ClassEntry, format_class_list, load_class_list

COLOURS = [
    (220, 30, 30),
    (30, 180, 40),
    (30, 60, 220),
    (240, 220, 20),
    (220, 40, 200),
    (20, 210, 220),
    (250, 140, 0),
    (120, 40, 160),
    (255, 255, 255),
    (0, 0, 0),
]
SHAPES = ["square", "circle", "triangle", "cross", "diamond"]

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
VOC_FIXTURE_CLASSES = ["car", "cat", "dog", "person"]  # a subset of datamodules.voc.VOC_CLASSES


def class_style(index: int) -> tuple[tuple[int, int, int], str]:
    """The (RGB colour, shape name) that draws class ``index`` in every fixture."""
    return COLOURS[index % len(COLOURS)], SHAPES[index % len(SHAPES)]


def noisy_background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A mid-grey image with mild noise (so JPEG and augmentation have texture to work on)."""
    base = rng.integers(90, 160)
    pixels = np.clip(base + rng.normal(0, 12, size=(height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def draw_shape(image: Image.Image, box: tuple[int, int, int, int], index: int) -> None:
    """Draw class ``index``'s shape filling the pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive)."""
    colour, shape = class_style(index)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    xa, ya = x1 - 1, y1 - 1
    cx, cy = (x0 + xa) / 2, (y0 + ya) / 2
    if shape == "square":
        draw.rectangle((x0, y0, xa, ya), fill=colour)
    elif shape == "circle":
        draw.ellipse((x0, y0, xa, ya), fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, ya), (xa, ya), (cx, y0)], fill=colour)
    elif shape == "cross":
        tx, ty = max(1, (x1 - x0) // 3), max(1, (y1 - y0) // 3)
        draw.rectangle((x0, y0 + ty, xa, ya - ty), fill=colour)
        draw.rectangle((x0 + tx, y0, xa - tx, ya), fill=colour)
    else:  # diamond
        draw.polygon([(cx, y0), (xa, cy), (cx, ya), (x0, cy)], fill=colour)


def _random_box(rng: np.random.Generator, height: int, width: int, lo: float, hi: float) -> tuple[int, ...]:
    side_h = int(rng.integers(max(4, int(lo * height)), max(5, int(hi * height)) + 1))
    side_w = int(rng.integers(max(4, int(lo * width)), max(5, int(hi * width)) + 1))
    side_h, side_w = min(side_h, height), min(side_w, width)
    x0 = int(rng.integers(0, width - side_w + 1))
    y0 = int(rng.integers(0, height - side_h + 1))
    return x0, y0, x0 + side_w, y0 + side_h


def shape_image(rng: np.random.Generator, index: int, height: int, width: int) -> Image.Image:
    """A classification image: one shape of class ``index`` covering 35–80% of each side."""
    image = noisy_background(rng, height, width)
    draw_shape(image, _random_box(rng, height, width, 0.35, 0.8), index)
    return image


# --------------------------------------------------------------------------------------------- ImageNet


def write_imagenet(
    root: str | Path,
    layout: str = "ilsvrc",
    class_list: str = "imagenet10",
    wnids_per_class: int | None = 1,
    train_per_wnid: int = 8,
    val_per_wnid: int = 3,
    image_size: tuple[int, int] = (72, 96),
    seed: int = 0,
) -> Path:
    """Write an ImageNet-style fixture under ``root`` and return ``root``.

    Args:
        root: Output folder (created).
        layout: ``"ilsvrc"`` (``train/<wnid>/``, ``val/<wnid>/``) or ``"folders"`` (``<wnid>/``, with
            ``train_per_wnid + val_per_wnid`` images each).
        class_list: The shipped list (or file) whose labels and real wnids are used.
        wnids_per_class: Folders written per class (its first wnids); ``None`` writes every wnid of the
            list, so the list itself (e.g. ``"imagenet10"``) reads the fixture.
        train_per_wnid: Training images per wnid folder.
        val_per_wnid: Validation images per wnid folder.
        image_size: (height, width) of the images (±8 pixels of random jitter).
        seed: Seed of the image content.

    ``root/class_list.txt`` names the labels and exactly the wnids written.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    written: list[ClassEntry] = []
    val_counter = 0
    for index, entry in enumerate(load_class_list(class_list)):
        wnids = entry.wnids if wnids_per_class is None else entry.wnids[:wnids_per_class]
        written.append(ClassEntry(entry.label, wnids))
        for wnid in wnids:
            if layout == "ilsvrc":
                folders = [(root / "train" / wnid, train_per_wnid, False), (root / "val" / wnid, val_per_wnid, True)]
            elif layout == "folders":
                folders = [(root / wnid, train_per_wnid + val_per_wnid, False)]
            else:
                raise ValueError(f"layout must be 'ilsvrc' or 'folders', got {layout!r}")
            for folder, count, is_val in folders:
                folder.mkdir(parents=True, exist_ok=True)
                for n in range(count):
                    height = image_size[0] + int(rng.integers(-8, 9))
                    width = image_size[1] + int(rng.integers(-8, 9))
                    if is_val:
                        val_counter += 1
                        name = f"ILSVRC2012_val_{val_counter:08d}.JPEG"
                    else:
                        name = f"{wnid}_{1000 + 37 * n}.JPEG"
                    shape_image(rng, index, height, width).save(folder / name, format="JPEG", quality=90)
    header = f"Fixture written by datamodules.fixtures from {class_list!r}: the wnids present under this root."
    (root / "class_list.txt").write_text(format_class_list(written, header=header), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------------- CIFAR-10


def write_cifar10(root: str | Path, train_per_batch: int = 20, test_images: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with the real file names and pickle keys; return ``root``.

    Five training batches of ``train_per_batch`` images and one test batch, classes cycling 0..9 (so
    each class appears equally often). ``data`` is ``uint8 (N, 3072)``: the 1024 red, then green, then
    blue values of each 32×32 image, row-major, as in the real files. Pickled with protocol 2 like the
    originals. Read them with ``verify_checksums=False``: their md5s are not the real dataset's.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(count: int, label_text: str, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(count)]
        images = [np.asarray(shape_image(rng, k, 32, 32)) for k in labels]
        data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]).astype(np.uint8)
        names = [f"fixture_{CIFAR10_LABELS[k]}_{offset + i:05d}.png" for i, k in enumerate(labels)]
        return {"batch_label": label_text, "labels": labels, "data": data, "filenames": names}

    for b in range(1, 6):
        content = batch(train_per_batch, f"training batch {b} of 5", (b - 1) * train_per_batch)
        with open(folder / f"data_batch_{b}", "wb") as f:
            pickle.dump(content, f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test_images, "testing batch 1 of 1", 0), f, protocol=2)
    meta = {"num_cases_per_batch": train_per_batch, "label_names": list(CIFAR10_LABELS), "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


# --------------------------------------------------------------------------------------------- VOC


def _voc_xml(folder: str, filename: str, size: tuple[int, int], objects: list[dict]) -> ET.ElementTree:
    height, width = size
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = folder
    ET.SubElement(annotation, "filename").text = filename
    source = ET.SubElement(annotation, "source")
    ET.SubElement(source, "database").text = "splitcv fixture"
    ET.SubElement(source, "annotation").text = "PASCAL VOC format"
    size_el = ET.SubElement(annotation, "size")
    ET.SubElement(size_el, "width").text = str(width)
    ET.SubElement(size_el, "height").text = str(height)
    ET.SubElement(size_el, "depth").text = "3"
    ET.SubElement(annotation, "segmented").text = "0"
    for obj in objects:
        element = ET.SubElement(annotation, "object")
        ET.SubElement(element, "name").text = obj["name"]
        ET.SubElement(element, "pose").text = "Unspecified"
        ET.SubElement(element, "truncated").text = "0"
        ET.SubElement(element, "difficult").text = "1" if obj["difficult"] else "0"
        bndbox = ET.SubElement(element, "bndbox")
        x0, y0, x1, y1 = obj["box"]
        # VOC stores 1-based inclusive pixel indices: pixels x0..x1-1 (0-based) are xmin=x0+1, xmax=x1.
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1), strict=True):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(annotation)
    ET.indent(tree)
    return tree


def _free_box(
    rng: np.random.Generator, height: int, width: int, taken: list[tuple[int, ...]]
) -> tuple[int, ...] | None:
    """A random box that overlaps none of ``taken`` (so no object hides another), or None."""
    for _ in range(50):
        box = _random_box(rng, height, width, 0.2, 0.45)
        if all(box[2] <= t[0] or t[2] <= box[0] or box[3] <= t[1] or t[3] <= box[1] for t in taken):
            return box
    return None


def _write_voc_year(
    devkit: Path,
    year: str,
    splits: dict[str, list[str]],
    rng: np.random.Generator,
    empty_ids: set[str],
    difficult_every: int,
    image_size: tuple[int, int],
) -> None:
    base = devkit / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    object_count = 0
    for ids in splits.values():
        for image_id in ids:
            height = image_size[0] + int(rng.integers(-16, 17))
            width = image_size[1] + int(rng.integers(-16, 17))
            image = noisy_background(rng, height, width)
            objects = []
            if image_id not in empty_ids:
                boxes: list[tuple[int, ...]] = []
                for _ in range(int(rng.integers(1, 4))):
                    box = _free_box(rng, height, width, boxes)
                    if box is None:
                        break
                    boxes.append(box)
                    k = int(rng.integers(len(VOC_FIXTURE_CLASSES)))
                    draw_shape(image, box, k)
                    object_count += 1
                    objects.append(
                        {"name": VOC_FIXTURE_CLASSES[k], "box": box, "difficult": object_count % difficult_every == 0}
                    )
            image.save(base / "JPEGImages" / f"{image_id}.jpg", format="JPEG", quality=90)
            _voc_xml(f"VOC{year}", f"{image_id}.jpg", (height, width), objects).write(
                base / "Annotations" / f"{image_id}.xml", encoding="utf-8"
            )
    for split, ids in splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


def write_voc(
    root: str | Path,
    trainval_2007: int = 12,
    test_2007: int = 10,
    trainval_2012: int = 10,
    image_size: tuple[int, int] = (120, 160),
    seed: int = 0,
) -> Path:
    """Write ``root/VOCdevkit/VOC2007`` (trainval + test) and ``VOC2012`` (trainval); return ``root``.

    Images hold 1–3 shapes of the classes ``car, cat, dog, person`` (``VOC_FIXTURE_CLASSES``, drawn with
    ``class_style`` of their index in that list); objects overlap freely. Every 7th object is marked
    ``difficult``; the first VOC2012 image has an annotation with no ``<object>``. Boxes are written as
    VOC does: 1-based inclusive pixel indices.
    """
    root = Path(root)
    devkit = root / "VOCdevkit"
    rng = np.random.default_rng(seed)
    ids_07 = [f"{i:06d}" for i in range(1, trainval_2007 + 1)]
    test_07 = [f"{i:06d}" for i in range(trainval_2007 + 1, trainval_2007 + test_2007 + 1)]
    half = len(ids_07) // 2
    splits_07 = {"train": ids_07[:half], "val": ids_07[half:], "test": test_07}
    _write_voc_year(devkit, "2007", splits_07, rng, set(), 7, image_size)
    (devkit / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").write_text(
        "".join(f"{i}\n" for i in ids_07), encoding="utf-8"
    )
    ids_12 = [f"2008_{i:06d}" for i in range(1, trainval_2012 + 1)]
    half = len(ids_12) // 2
    _write_voc_year(devkit, "2012", {"train": ids_12[:half], "val": ids_12[half:]}, rng, {ids_12[0]}, 7, image_size)
    (devkit / "VOC2012" / "ImageSets" / "Main" / "trainval.txt").write_text(
        "".join(f"{i}\n" for i in ids_12), encoding="utf-8"
    )
    return root


WRITERS = {"imagenet": write_imagenet, "cifar10": write_cifar10, "voc": write_voc}


def main(argv: list[str] | None = None) -> None:
    """``python -m datamodules.fixtures {imagenet,cifar10,voc} DIR [--layout ...] [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.fixtures", description="Write a tiny dataset in its real on-disk format."
    )
    parser.add_argument("dataset", choices=sorted(WRITERS))
    parser.add_argument("root", help="output folder")
    parser.add_argument("--layout", choices=["ilsvrc", "folders"], default="ilsvrc", help="imagenet only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dataset == "imagenet":
        root = write_imagenet(args.root, layout=args.layout, seed=args.seed)
    else:
        root = WRITERS[args.dataset](args.root, seed=args.seed)
    count = sum(1 for p in Path(root).rglob("*") if p.is_file())
    print(f"wrote the {args.dataset} fixture to {root} ({count} files)")


if __name__ == "__main__":
    main()
