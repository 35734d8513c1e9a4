"""Tiny fixture datasets (real on-disk formats) shared by the recognition modules' tests."""

import pytest

from datamodules.fixtures import write_imagenet, write_voc


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> str:
    """ImageNet fixture (ILSVRC layout, the ten imagenet10 labels), one train and one val image per class."""
    return str(
        write_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    )


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> str:
    """VOC fixture: 4 VOC2007 trainval, 2 test and 2 VOC2012 trainval images."""
    return str(
        write_voc(tmp_path_factory.mktemp("voc"), trainval_2007=4, test_2007=2, trainval_2012=2, image_size=(64, 80))
    )
