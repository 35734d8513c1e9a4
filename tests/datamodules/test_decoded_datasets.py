"""The decoded-dataset wrapper on its own (no Trainer): it points a DataModule's datasets at a channel's decoded
images and measures the bytes each image really cost."""

from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import TensorDataset

from coding.image_channel import ClassicalChannel
from coding.image_codecs import decode_image, encode_image
from datamodules.decoded_cache import CachedImageLoader, DecodingLoader
from datamodules.decoded_datasets import DecodedDatasets, leaf_datasets
from datamodules.fixtures import write_imagenet
from datamodules.image_io import load_rgb
from datamodules.imagenet_subset import ImageNetSubset
from models.rnn_codec import RNNCodec


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_imagenet(tmp_path_factory.mktemp("imagenet"), train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))


@pytest.mark.parametrize("cached", [True, False])
def test_a_classical_channel_at_one_quality(root, tmp_path, cached):
    data = ImageNetSubset(root, class_list=f"{root}/class_list.txt", image_size=32, num_workers=0, pin_memory=False)
    data.setup("fit")
    channel = ClassicalChannel("jpeg", quality=20)
    wrapper = DecodedDatasets({"train": "original", "eval": "compressed"}, 1, "packed", channel,
                              str(tmp_path / "cache") if cached else None, 0)  # fmt: skip
    wrapper.prepare(data, "fit", RNNCodec(width=0.0625))
    assert isinstance(data.val_set.image_loader, CachedImageLoader if cached else DecodingLoader)
    assert data.train_set.image_loader is load_rgb and wrapper.prepared["train"] == "original"
    paths = data.val_set.source_paths()
    files = [encode_image(load_rgb(p), "jpeg", 20) for p in paths]  # encoded here, not through the wrapper
    np.testing.assert_array_equal(data.val_set.image_loader(paths[4]), decode_image(files[4], "jpeg"))
    rates = wrapper.rates["val"]
    assert rates["bytes_per_image"] == pytest.approx(np.mean([len(f) for f in files]))
    assert rates["source_bytes_per_image"] == pytest.approx(np.mean([p.stat().st_size for p in paths]))
    # back to originals: the dataset's own reader again
    DecodedDatasets({"train": "original", "eval": "original"}, 1, "packed", None, None, 0).prepare(
        data, "validate", RNNCodec(width=0.0625)
    )
    assert data.val_set.image_loader is load_rgb


def test_a_dataset_not_built_on_image_files_is_refused():
    with pytest.raises(TypeError, match="TensorDataset does not read image files"):
        leaf_datasets(TensorDataset())
