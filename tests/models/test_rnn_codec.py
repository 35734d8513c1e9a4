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


# ----------------------------------------------------------------------------------------------------
# The cells against their written equations (models/rnn_cells.py docstring), by a direct implementation
# that takes each gate's weights by name and convolves them one by one.


def _conv(x, weight, stride=1):
    return torch.nn.functional.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)


def _random_cell(cls, seed):
    torch.manual_seed(seed)
    cell = cls(5, 6, kernel_size=3, stride=2, hidden_kernel_size=3)
    for p in cell.parameters():
        torch.nn.init.normal_(p, std=0.3)  # large enough that every gate is far from 0.5 and 1
    return cell


def test_lstm_cell_follows_its_equations():
    cell = _random_cell(ConvLSTMCell, 0)
    x, h, c = torch.randn(2, 5, 8, 10), torch.randn(2, 6, 4, 5), torch.randn(2, 6, 4, 5)
    W_i, W_f, W_g, W_o = cell.conv_ih.weight.chunk(4)
    U_i, U_f, U_g, U_o = cell.conv_hh.weight.chunk(4)
    i = torch.sigmoid(_conv(x, W_i, 2) + _conv(h, U_i))
    f = torch.sigmoid(_conv(x, W_f, 2) + _conv(h, U_f))
    g = torch.tanh(_conv(x, W_g, 2) + _conv(h, U_g))
    o = torch.sigmoid(_conv(x, W_o, 2) + _conv(h, U_o))
    c_new = f * c + i * g
    h_new = o * torch.tanh(c_new)
    out, (h_out, c_out) = cell(x, (h, c))
    torch.testing.assert_close(c_out, c_new)
    torch.testing.assert_close(h_out, h_new)
    assert out is h_out
    # zero initial state
    out0, (_, c0) = cell(x)
    i0, g0, o0 = (torch.sigmoid(_conv(x, W_i, 2)), torch.tanh(_conv(x, W_g, 2)), torch.sigmoid(_conv(x, W_o, 2)))
    torch.testing.assert_close(c0, i0 * g0)
    torch.testing.assert_close(out0, o0 * torch.tanh(i0 * g0))


def test_gru_cell_follows_toderici_2017():
    """z = σ(W_z x + U_z h), r = σ(W_r x + U_r h), h' = (1 − z) ⊙ h + z ⊙ tanh(W x + U (r ⊙ h))."""
    cell = _random_cell(ConvGRUCell, 1)
    x, h = torch.randn(2, 5, 8, 10), torch.randn(2, 6, 4, 5)
    W_z, W_r, W = cell.conv_ih.weight.chunk(3)
    U_z, U_r = cell.conv_hh.weight.chunk(2)
    U = cell.conv_hn.weight
    z = torch.sigmoid(_conv(x, W_z, 2) + _conv(h, U_z))
    r = torch.sigmoid(_conv(x, W_r, 2) + _conv(h, U_r))
    expected = (1 - z) * h + z * torch.tanh(_conv(x, W, 2) + _conv(r * h, U))
    out, state = cell(x, h)
    torch.testing.assert_close(out, expected)
    assert state is out
    # the reset-after form (PyTorch/cuDNN: r ⊙ (U h)) gives another state: the test above tells them apart
    reset_after = (1 - z) * h + z * torch.tanh(_conv(x, W, 2) + r * _conv(h, U))
    assert (reset_after - expected).abs().max() > 1e-2
    out0, _ = cell(x)  # zero initial state: h' = z ⊙ tanh(W x)
    torch.testing.assert_close(out0, torch.sigmoid(_conv(x, W_z, 2)) * torch.tanh(_conv(x, W, 2)))


def test_gru_checkpoint_of_the_old_reset_after_layout_fails_naming_the_keys():
    cell = ConvGRUCell(4, 8, 3, 1, 1)
    old = {"conv_ih.weight": torch.zeros(24, 4, 3, 3), "conv_hh.weight": torch.zeros(24, 8, 1, 1)}
    with pytest.raises(RuntimeError, match=r"(?s)conv_hn\.weight.*conv_hh\.weight.*torch.Size\(\[24, 8, 1, 1\]\)"):
        cell.load_state_dict(old)
