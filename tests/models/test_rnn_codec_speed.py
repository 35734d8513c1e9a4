"""The codec's speed switches compute what the plain (eager, unfused) codec computes.

``skip_zero_state`` is exact (outputs and gradients bit for bit); ``channels_last``, ``compile_gates`` and
``small_map_gemm`` agree to float rounding; ``autocast_bf16`` to bfloat16 precision, in training only. Tiny networks, two or three iterations.
"""

from __future__ import annotations

import pytest
import torch

from models import rnn_codec
from models.rnn_cells import ConvGRUCell, ConvLSTMCell
from models.rnn_codec import RNNCodec, cpu_has_native_bf16
from models.small_map_conv import SmallMapConv2d

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(cell: str, **switches) -> tuple[RNNCodec, RNNCodec]:
    torch.manual_seed(0)
    plain = RNNCodec(cell=cell, width=0.0625, skip_zero_state=False)
    fast = RNNCodec(cell=cell, width=0.0625, **switches)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _step(codec: RNNCodec, x: torch.Tensor, iterations: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training forward (stochastic binarizer, seeded) and backward of the paper's loss."""
    codec.zero_grad()
    torch.manual_seed(1)
    out = codec(x, iterations)
    loss = (x.unsqueeze(0) - out["x_hats"]).abs().mean(dim=(1, 2, 3, 4)).sum()
    loss.backward()
    return out["x_hats"].detach(), {n: p.grad.clone() for n, p in codec.named_parameters()}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_skipping_the_zero_state_is_exact_and_skips(cell):
    plain, fast = _pair(cell, skip_zero_state=True)
    calls = {"plain": 0, "fast": 0}
    for key, codec in (("plain", plain), ("fast", fast)):
        for module in codec.modules():
            if isinstance(module, (ConvLSTMCell, ConvGRUCell)):
                module.conv_hh.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    x = torch.rand(2, 3, 32, 32)
    y_plain, g_plain = _step(plain.train(), x, 3)
    y_fast, g_fast = _step(fast.train(), x, 3)
    assert torch.equal(y_plain, y_fast)
    assert all(torch.equal(g_plain[n], g_fast[n]) for n in g_plain)
    assert (calls["plain"], calls["fast"]) == (7 * 3, 7 * 2)  # 7 cells: the first iteration's U * 0 skipped


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_channels_last_agrees_to_float_rounding(cell):
    plain, fast = _pair(cell, channels_last=True)
    assert fast.encoder.rnn1.conv_ih.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 48)
    y_plain, g_plain = _step(plain.train(), x, 2)
    y_fast, g_fast = _step(fast.train(), x, 2)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-4, atol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_small_map_gemm_agrees_to_float_rounding_and_runs_the_2x2_convolutions_as_gemm(cell):
    plain, fast = _pair(cell, small_map_gemm=True)
    x = torch.rand(2, 3, 32, 32)  # 32×32 patches: encoder RNN 3 and decoder RNN 1 have 2×2 outputs
    y_plain, g_plain = _step(plain.train(), x, 3)
    y_fast, g_fast = _step(fast.train(), x, 3)
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-4, atol=1e-5)
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-3, atol=1e-5, msg=name)
    calls = {name: m.matmul_calls for name, m in fast.named_modules() if isinstance(m, SmallMapConv2d)}
    assert {name for name, n in calls.items() if n} == {"encoder.rnn3.conv_ih", "decoder.rnn1.conv_ih"}
    assert calls["encoder.rnn3.conv_ih"] == calls["decoder.rnn1.conv_ih"] == 3  # once per iteration
    with torch.no_grad():  # evaluation is nn.Conv2d itself
        assert torch.equal(fast.eval()(x, 2)["x_hats"], plain.eval()(x, 2)["x_hats"])


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16: the switch is ignored")
def test_bf16_autocast_trains_at_bf16_precision_and_evaluates_in_float32():
    plain, fast = _pair("lstm", autocast_bf16=True)
    x = torch.rand(2, 3, 32, 32)
    y_plain, g_plain = _step(plain.train(), x, 2)
    y_fast, g_fast = _step(fast.train(), x, 2)
    assert y_fast.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g_fast.values())
    assert not torch.equal(y_fast, y_plain)  # the training forward ran in bf16
    assert (y_fast - y_plain).abs().mean() < 0.01  # 8 mantissa bits, the same binarizer draws
    with torch.no_grad():
        assert torch.equal(fast.eval()(x, 2)["x_hats"], plain.eval()(x, 2)["x_hats"])
    assert torch.equal(fast.encode(x, 2), plain.encode(x, 2))  # bitstreams: float32 whatever the switch


def test_evaluation_and_encoding_stay_float32_inside_an_outer_bf16_autocast():
    """Lightning's ``bf16-mixed`` (configs/trainer/gpu.yaml) autocasts validation too; the codec's own context
    turns it off outside training, so every evaluation and every bitstream is float32 on any trainer."""
    plain, fast = _pair("lstm", autocast_bf16=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = plain.eval()(x, 2)["x_hats"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(fast.eval()(x, 2)["x_hats"], reference)
            assert torch.equal(fast.encode(x, 2), plain.encode(x, 2))


def test_bf16_autocast_is_ignored_with_a_warning_without_native_bf16(monkeypatch):
    monkeypatch.setattr(rnn_codec, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(rnn_codec, "_warned_bf16", set())
    plain, fast = _pair("lstm", autocast_bf16=True)
    x = torch.rand(2, 3, 32, 32)
    y_plain, _ = _step(plain.train(), x, 2)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        y_fast, _ = _step(fast.train(), x, 2)
    assert torch.equal(y_fast, y_plain)


def test_the_codec_hands_its_switches_to_every_cell():
    codec = RNNCodec(width=0.0625, skip_zero_state=False, compile_gates=True, small_map_gemm=True)
    cells = [m for m in codec.modules() if isinstance(m, (ConvLSTMCell, ConvGRUCell))]
    assert len(cells) == 7 and all(c.compile_gates and not c.skip_zero_state for c in cells)
    assert all(isinstance(c.conv_ih, SmallMapConv2d) and isinstance(c.conv_hh, SmallMapConv2d) for c in cells)
    plain_cells = [m for m in RNNCodec(width=0.0625).modules() if isinstance(m, ConvLSTMCell)]
    assert not any(isinstance(m, SmallMapConv2d) for c in plain_cells for m in c.modules())


def _cell_steps(cell: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Two steps (zero state, then a real one) and the gradient of their outputs' sum."""
    cell.zero_grad()
    h1, state = cell(x)
    h2, _ = cell(x * 0.5, state)
    (h1.sum() + h2.square().sum()).backward()
    return h2.detach(), {n: p.grad.clone() for n, p in cell.named_parameters()}


@pytest.mark.slow
def test_compiled_gates_agree_to_float_rounding():
    """One LSTM cell (the configs' cell), eager against compiled: Inductor compiles the gate function's
    forward and backward (20–90 s here, the reason only the LSTM is compiled in the suite; the GRU's
    compiled functions are the eager ``gru_reset``/``gru_update`` that the exactness tests run)."""
    kind = ConvLSTMCell
    torch.manual_seed(0)
    plain = kind(4, 8, 3, 1, 3, skip_zero_state=False)
    fast = kind(4, 8, 3, 1, 3, compile_gates=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 6, 6)
    y_plain, g_plain = _cell_steps(plain.train(), x)
    y_fast, g_fast = _cell_steps(fast.train(), x)
    assert fast._compiled  # the compiled functions were used
    torch.testing.assert_close(y_fast, y_plain, rtol=1e-5, atol=1e-6)
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-4, atol=1e-5, msg=name)
