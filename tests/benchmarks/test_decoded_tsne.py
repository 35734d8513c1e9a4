"""Figure 5: the t-SNE benchmark embeds the recogniser's features of original and of decoded evaluation images, and
those features are the ones a direct decode (compress → decompress) gives."""

from __future__ import annotations

import argparse
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from benchmarks.decoded_tsne import datamodule_for, load_model, main
from coding.image_codecs import to_float_chw, to_uint8_hwc
from coding.rnn_bitstream import compress, decompress
from datamodules.fixtures import write_imagenet
from datamodules.image_io import load_rgb
from datamodules.imagenet_subset import ImageNetSubset
from lightning_modules.compressed_image_recognition import CompressedImageRecognition
from models.rnn_codec import RNNCodec
from tests.lightning_modules.tiny_trainer import trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_features_of_original_and_decoded_images_are_embedded(tmp_path):
    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    torch.manual_seed(0)
    compressor = tmp_path / "compressor.ckpt"
    torch.save({"state_dict": {f"codec.{k}": v for k, v in RNNCodec(width=0.0625).state_dict().items()}}, compressor)
    model = CompressedImageRecognition(
        num_classes=10, train_on="compressed", eval_on="compressed", iterations=1, codec_width=0.0625,
        init_compressor_from=str(compressor), decoded_cache_dir=str(tmp_path / "cache"), cache_workers=0,
        arch="shufflenet_v2_x0_5",
    )  # fmt: skip
    data = ImageNetSubset(root, class_list=f"{root}/class_list.txt", image_size=32, batch_size=10, num_workers=0,
                          pin_memory=False)  # fmt: skip
    trainer(tmp_path / "run", max_epochs=1).fit(model, datamodule=data)
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"

    out = tmp_path / "tsne"
    (result,) = main([str(checkpoint), "--out", str(out)])  # the evaluation images from the checkpoint's DataModule
    n = len(result["labels"])
    assert n == 10 and result["embedding"].shape == (2 * n, 2) and np.isfinite(result["embedding"]).all()
    assert len(result["rows"]) == 10  # one spread row per class
    with Image.open(out / "tsne.png") as png:
        assert png.size[0] > 800
    saved = np.load(out / "tsne_features.npz")
    np.testing.assert_array_equal(saved["decoded_0"], result["decoded"])

    # independent: the network without its fc layer, on the source file and on its direct decode
    reference = load_model(checkpoint)
    trunk = copy.deepcopy(reference.recogniser)
    trunk[1].fc = nn.Identity()
    data.setup("validate")
    for i in (0, 7):
        path, label = data.val_set.samples[i].path, data.val_set.samples[i].label
        assert result["labels"][i] == label
        pixels = load_rgb(path)
        stream = compress(reference.compressor, to_float_chw(pixels).unsqueeze(0), 1, coding="packed")
        decoded = to_uint8_hwc(decompress(reference.compressor, stream)[0])
        for image, which in ((pixels, "original"), (decoded, "decoded")):
            x = data.val_set.transform(image=image)["image"].unsqueeze(0)
            with torch.no_grad():
                torch.testing.assert_close(torch.from_numpy(result[which][i]), trunk(x)[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(result["original"], result["decoded"])


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope.ckpt")])
    assert "nope.ckpt" in capsys.readouterr().err


def test_the_datamodule_of_a_lightningcli_checkpoint_is_rebuilt(tmp_path):
    """LightningCLI records the DataModule with its ``_class_path``; only an ImageNetSubset is accepted."""
    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(40, 48))
    args = argparse.Namespace(root=None, class_list=None, image_size=None)
    path = tmp_path / "cli.ckpt"
    settings = {"_class_path": "datamodules.imagenet_subset.ImageNetSubset", "root": str(root),
                "class_list": f"{root}/class_list.txt", "image_size": 32, "batch_size": 4}  # fmt: skip
    torch.save({"datamodule_hyper_parameters": settings}, path)
    data = datamodule_for(path, args)
    assert data.image_size == 32 and len(data.val_set) == 10
    torch.save({"datamodule_hyper_parameters": {**settings, "_class_path": "datamodules.voc.VOC"}}, path)
    with pytest.raises(ValueError, match="datamodules.voc.VOC"):
        datamodule_for(path, args)
