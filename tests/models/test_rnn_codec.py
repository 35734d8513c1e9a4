"""The recurrent codec: layer-table parameter count, shapes, state shapes, padding, modes."""

import pytest
import torch

from models.rnn_cells import ConvGRUCell, ConvLSTMCell
from models.rnn_codec import STRIDE, RNNCodec, rnn_codec_parameter_count, scaled


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_width_lstm_parameter_count_matches_layer_table():
    # Derivation from the layer table (all convolutions bias-free; an LSTM cell with input i,
    # hidden h, kernels k_in/k_hid has 4·h·(i·k_in² + h·k_hid²) weights):
    # encoder   conv 3→64 3×3                 3·64·9                        =      1,728
    #           LSTM 64→256 (3×3, 1×1)        4·256·(64·9 + 256)            =    851,968
    #           LSTM 256→512 (3×3, 1×1)       4·512·(256·9 + 512)           =  5,767,168
    #           LSTM 512→512 (3×3, 1×1)       4·512·(512·9 + 512)           = 10,485,760
    # binarizer conv 512→32 1×1               512·32                        =     16,384
    # decoder   conv 32→512 1×1               32·512                        =     16,384
    #           LSTM 512→512 (3×3, 1×1)       4·512·(512·9 + 512)           = 10,485,760
    #           LSTM 128→512 (3×3, 1×1)       4·512·(128·9 + 512)           =  3,407,872
    #           LSTM 128→256 (3×3, 3×3)       4·256·(128·9 + 256·9)         =  3,538,944
    #           LSTM 64→128 (3×3, 3×3)        4·128·(64·9 + 128·9)          =    884,736
    #           conv 32→3 1×1                 32·3                          =         96
    # total                                                                 = 35,456,800
    codec = RNNCodec(cell="lstm", width=1.0)
    assert n_params(codec.encoder) == 1_728 + 851_968 + 5_767_168 + 10_485_760
    assert n_params(codec.binarizer) == 16_384
    assert n_params(codec.decoder) == 16_384 + 10_485_760 + 3_407_872 + 3_538_944 + 884_736 + 96
    assert n_params(codec) == 35_456_800
    assert rnn_codec_parameter_count("lstm", 1.0) == 35_456_800


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("width", [0.125, 0.25, 0.5])
def test_parameter_count_formula_matches_modules(cell, width):
    assert n_params(RNNCodec(cell=cell, width=width)) == rnn_codec_parameter_count(cell, width)


def test_gru_has_three_quarters_of_the_lstm_recurrent_weights():
    lstm, gru = ConvLSTMCell(8, 16, 3, 1, 1), ConvGRUCell(8, 16, 3, 1, 1)
    assert n_params(gru) * 4 == n_params(lstm) * 3


def test_scaled_channels_keep_depth_to_space_divisible():
    for width in (0.05, 0.1, 0.3, 0.77, 1.0, 1.5):
        assert all(scaled(c, width) % 4 == 0 for c in (64, 128, 256, 512))


@pytest.mark.parametrize("size", [(32, 32), (48, 80), (33, 50), (17, 100)])
def test_shapes_follow_the_input_and_any_size_is_padded_and_cropped(size):
    codec = RNNCodec(width=0.0625).eval()
    x = torch.rand(2, 3, *size)
    out = codec(x, iterations=3)
    h, w = (-(-size[0] // STRIDE), -(-size[1] // STRIDE))
    assert out["codes"].shape == (3, 2, 32, h, w)
    assert out["x_hats"].shape == (3, 2, 3, *size)
    assert torch.equal(out["x_hat"], out["x_hats"][-1])
    assert set(out["codes"].unique().tolist()) <= {-1.0, 1.0}


def test_recurrent_state_follows_input_size_between_calls():
    codec = RNNCodec(width=0.0625).eval()
    a = codec(torch.rand(1, 3, 32, 32), 2)["codes"]
    b = codec(torch.rand(1, 3, 64, 96), 2)["codes"]
    assert a.shape[-2:] == (2, 2) and b.shape[-2:] == (4, 6)


def test_binarizer_is_stochastic_in_training_and_sign_in_eval():
    codec = RNNCodec(width=0.0625)
    x = torch.rand(1, 3, 64, 64)
    codec.train()
    torch.manual_seed(0)
    first = codec(x, 1)["codes"]
    second = codec(x, 1)["codes"]
    assert not torch.equal(first, second)
    codec.eval()
    assert torch.equal(codec(x, 1)["codes"], codec(x, 1)["codes"])


def test_straight_through_gradient_reaches_the_encoder():
    codec = RNNCodec(width=0.0625).train()
    x = torch.rand(2, 3, 32, 32)
    loss = (codec(x, 2)["x_hat"] - x).abs().mean()
    loss.backward()
    assert codec.encoder.conv.weight.grad is not None
    assert codec.encoder.conv.weight.grad.abs().sum() > 0


def test_decode_reproduces_the_forward_reconstructions():
    codec = RNNCodec(width=0.0625).eval()
    x = torch.rand(2, 3, 40, 56)
    out = codec(x, 3)
    assert torch.equal(codec.decode(out["codes"], size=(40, 56)), out["x_hats"])


def test_one_shot_reconstruction_is_the_last_decoder_output_alone():
    x = torch.rand(1, 3, 32, 32)
    torch.manual_seed(0)
    additive = RNNCodec(width=0.0625, reconstruction="additive").eval()
    one_shot = RNNCodec(width=0.0625, reconstruction="one_shot").eval()
    one_shot.load_state_dict(additive.state_dict())
    a, o = additive(x, 2), one_shot(x, 2)
    # first iteration identical; afterwards additive accumulates, one-shot replaces
    assert torch.equal(a["x_hats"][0], o["x_hats"][0])
    assert not torch.allclose(a["x_hats"][1], o["x_hats"][1])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="reconstruction"):
        RNNCodec(reconstruction="sum")
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        RNNCodec(cell="rnn")
    codec = RNNCodec(width=0.0625)
    with pytest.raises(ValueError, match="iterations"):
        codec(torch.rand(1, 3, 32, 32), 0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        codec(torch.rand(3, 32, 32), 1)
