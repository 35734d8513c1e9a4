"""Demo checkpoints of every split method, exported once per test session, and the fixture images."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.fixtures import write_imagenet
from tests.deploy import checkpoints

CASES = {
    "rnn_compressor": lambda d, c: checkpoints.rnn_compressor(d / "rnn.ckpt"),
    "rnn_compressor_gru_one_shot": lambda d, c: checkpoints.rnn_compressor(d / "gru.ckpt", "gru", 3, "one_shot"),
    "code_recognition_from_layer2": lambda d, c: checkpoints.code_recognition(d / "codes.ckpt", "from_layer2", 2),
    "code_recognition_conventional": lambda d, c: checkpoints.code_recognition(d / "conv.ckpt", "conventional", 2),
    "decoded_recognition": lambda d, c: checkpoints.decoded_recognition(d / "decoded.ckpt", c("rnn_compressor"), 2),
    "decoded_recognition_ssdlite": lambda d, c: checkpoints.decoded_recognition(
        d / "decoded_ssd.ckpt", c("rnn_compressor"), 2, "detection"
    ),
    "shared_trunk_mobilenet_v2": lambda d, c: checkpoints.shared_trunk(d / "mnv2.ckpt", "mobilenet_v2", "png"),
    "shared_trunk_vgg16": lambda d, c: checkpoints.shared_trunk(d / "vgg.ckpt", "vgg16", "png"),
    "shared_trunk_ssd224": lambda d, c: checkpoints.shared_trunk_detection(d / "ssd.ckpt"),
}

METHODS = {
    case: next(
        m for m in ("rnn_compressor", "code_recognition", "decoded_recognition", "shared_trunk") if case.startswith(m)
    )
    for case in CASES
}


@pytest.fixture(scope="session")
def fixture_images(tmp_path_factory) -> list[Path]:
    """The ImageNet fixture's validation images (ten JPEGs of about 40×48, sides not multiples of 16)."""
    root = write_imagenet(
        tmp_path_factory.mktemp("deploy_imagenet"), train_per_wnid=1, val_per_wnid=1, image_size=(40, 48)
    )
    return sorted((Path(root) / "val").rglob("*.JPEG"))


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """``demo_checkpoint(case)`` → a tiny checkpoint of that case (made once per session)."""
    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("deploy_checkpoints")

    def get(case: str) -> Path:
        if case not in made:
            made[case] = CASES[case](root, get)
        return made[case]

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory, demo_checkpoint, fixture_images):
    """``exported(case)`` → the export directory of that case (with reference.json of the fixture images)."""
    from deploy.export import export

    made: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("deploy_exports")

    def get(case: str) -> Path:
        if case not in made:
            made[case] = root / case
            export(demo_checkpoint(case), made[case], reference_images=fixture_images)
        return made[case]

    return get
