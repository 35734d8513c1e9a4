"""Bad input gets a clear error before any work."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli.lightning_cli import SplitCVCLI
from datamodules.image_folder_patches import ImageFolderPatches
from datamodules.image_io import UnreadableImageError
from lightning_modules.checkpoint_init import CheckpointMismatchError, load_state_dict_from_checkpoint
from lightning_modules.rnn_compressor import RNNCompressor

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_unknown_config_key_and_wrong_type_fail_before_any_work(tmp_path, tiny_compressor_args):
    result = run_cli("fit", *tiny_compressor_args, "--run.root", str(tmp_path), "--model.init_args.widht", "1")
    assert result.returncode != 0 and "widht" in result.stderr
    # The message comes first, says what is close, and leaves out jsonargparse's union bookkeeping.
    assert result.stderr.startswith("splitcv fit: error:"), result.stderr[:300]
    assert "Option 'widht' is not accepted (did you mean 'width'?)" in result.stderr
    assert "NestedArg" not in result.stderr and "NoneType" not in result.stderr and "usage:" not in result.stderr
    assert "splitcv fit --model.help lightning_modules.rnn_compressor.RNNCompressor" in result.stderr
    result = run_cli("fit", *tiny_compressor_args, "--run.root", str(tmp_path), "--trainer.max_epocs", "1")
    assert result.returncode == 2 and "did you mean --trainer.max_epochs" in result.stderr
    result = run_cli("fit", *tiny_compressor_args, "--run.root", str(tmp_path), "--model.init_args.width", "wide")
    assert result.returncode != 0 and "width" in result.stderr
    assert not any(tmp_path.rglob("*.ckpt"))


def test_missing_image_folder_names_the_path_and_layout(tmp_path):
    data = ImageFolderPatches(root=str(tmp_path / "nowhere"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"nowhere.*expected a folder of image files"):
        data.setup("fit")


def test_unreadable_image_names_the_file(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(tmp_path / f"ok{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    data = ImageFolderPatches(root=str(tmp_path), val_count=1, num_workers=0, seed=1)
    data.setup("fit")
    sources = [str(s) for s in data.train_set.sources + data.val_set.sources]
    assert any(s.endswith("broken.jpg") for s in sources)
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        for dataset in (data.train_set, data.val_set):
            for i in range(len(dataset)):
                dataset[i]


def test_checkpoint_of_another_method_names_missing_and_unexpected_keys(tmp_path):
    foreign = tmp_path / "classifier.ckpt"
    torch.save(
        {"state_dict": {"trunk.fc.weight": torch.zeros(10, 512), "codec.encoder.conv.weight": torch.zeros(1)}}, foreign
    )
    model = RNNCompressor(width=0.0625, iterations=1, init_from=str(foreign))  # reads nothing yet
    with pytest.raises(CheckpointMismatchError) as err:
        model.parent_init.apply(model)  # what the start of a fresh run does
    message = str(err.value)
    assert "missing keys" in message and "codec.decoder.conv2.weight" in message
    assert "unexpected keys" in message and "trunk.fc.weight" in message
    assert "codec.encoder.conv.weight" in message  # wrong shape is named too


def test_a_file_that_is_not_a_checkpoint_gets_our_message(tmp_path):
    import argparse
    import pickle

    text, plain_pickle, with_objects = tmp_path / "notes.ckpt", tmp_path / "plain.pkl", tmp_path / "objects.ckpt"
    text.write_text("epoch 3: loss 0.2\n")
    pickle.dump({"state_dict": {}}, plain_pickle.open("wb"))  # PyTorch: "... please file an issue ..."
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, with_objects)
    messages = []
    for path, expected in [
        (text, "notes.ckpt is not a PyTorch checkpoint"),
        (plain_pickle, "plain.pkl is not a PyTorch checkpoint"),
        (
            with_objects,
            r"objects.ckpt stores Python objects that a weights-only load refuses \(e.g. argparse.Namespace\)",
        ),
    ]:
        with pytest.raises(CheckpointMismatchError, match=expected) as err:
            load_state_dict_from_checkpoint(path)
        messages.append(str(err.value))
    assert not any("file an issue" in m or "weights_only` set to `False" in m for m in messages)


def test_fewer_model_classes_than_the_data_fails_at_setup_naming_both(tmp_path):
    import lightning

    from datamodules.fixtures import write_imagenet
    from datamodules.imagenet_subset import ImageNetSubset
    from lightning_modules.code_recognition import CodeRecognition
    from lightning_modules.data_checks import ClassCountError

    root = write_imagenet(tmp_path / "imagenet", train_per_wnid=1, val_per_wnid=1, image_size=(32, 32))
    data = ImageNetSubset(str(root), class_list=str(root / "class_list.txt"), image_size=32, batch_size=4,
                          num_workers=0, pin_memory=False)  # fmt: skip
    model = CodeRecognition(num_classes=5, iterations=1, codec_width=0.0625, latency_repeats=0)
    trainer = lightning.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ClassCountError, match=r"num_classes=5 but ImageNetSubset has 10 classes.*num_classes 10"):
        trainer.fit(model, datamodule=data)
    assert trainer.global_step == 0


def test_resuming_from_a_foreign_checkpoint_names_the_keys(tmp_path, tiny_compressor_args):
    foreign = tmp_path / "foreign.ckpt"
    import lightning

    state = {"trunk.fc.weight": torch.zeros(2, 2)}
    torch.save(
        {"state_dict": state, "global_step": 0, "epoch": 0, "pytorch-lightning_version": lightning.__version__}, foreign
    )
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*codec\.encoder.*Unexpected key.*trunk\.fc\.weight"):
        SplitCVCLI(args=["fit", *tiny_compressor_args, "--run.root", str(tmp_path), "--ckpt_path", str(foreign)])


def test_splitcv_search_is_the_bit_search_command(capsys):
    """`splitcv search` routes to the B-DCNN bit search's own parser (not LightningCLI's subcommands)."""
    import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["search", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: splitcv search") and "--resume" in out


def test_top_level_help_lists_every_subcommand_without_importing_lightning():
    code = "import sys, train; train.main(['--help']); print('LIGHTNING' if 'lightning' in sys.modules else 'LIGHT')"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for subcommand in ("fit", "validate", "test", "predict", "search"):
        assert f"  {subcommand} " in result.stdout
    assert result.stdout.strip().endswith("LIGHT")


def test_unknown_subcommand_is_named():
    result = run_cli("fitt")
    assert result.returncode != 0 and "unknown subcommand 'fitt'" in result.stderr
